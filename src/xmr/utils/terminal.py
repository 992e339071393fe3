"""Text from files and folders made safe to print on a terminal.

A file name, a caption or an id can hold anything but ``/`` and NUL: an escape sequence
(``ESC [ 2 J`` clears the screen, ``ESC ] 52`` writes the clipboard of some terminals), a
carriage return that overprints the line, a newline that forges another result line, or a bidi
override that shows text reversed. Human output passes such text through :func:`terminal_safe`,
which writes each of those characters as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``);
everything else, non-ASCII letters included, is kept. A JSON line (``as_json``) gets JSON's own
four-hex-digit ``\\u`` escapes instead, which JSON reads back as the same characters
(``json.dumps`` already escapes C0 controls, but not DEL, the C1 controls or the bidi controls).
"""

from __future__ import annotations

import re

#: C0 controls, DEL, C1 controls, the line / paragraph separators and the bidi embeddings,
#: overrides and isolates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def terminal_safe(text: str, *, as_json: bool = False) -> str:
    """``text`` with every terminal control character written as a visible escape (one line out);
    ``as_json``: ``text`` is a line of JSON, escaped the JSON way (the same value when parsed)."""
    if as_json:
        return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return _UNSAFE.sub(_escape, text)
