"""Request parsers for the API."""

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested too deeply to decode is a 400, not a 500.

    The standard library decoder recurses per nesting level, so a small body like `[[[[…]]]]` raises
    RecursionError, which DRF does not treat as a parse error.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type=media_type, parser_context=parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.")
