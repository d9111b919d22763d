"""GPT-2's byte <-> printable character map, used by HF's byte-level tokenizer.json files.

tokenizer.json stores tokens as strings, so byte-level BPE writes each byte as a
printable character: the 188 printable Latin-1 bytes stand for themselves and the rest
(control bytes, space, ...) are shifted to U+0100 and up, so a space is "Ġ" and a
newline "Ċ". llmlab keeps tokens as bytes and converts only at the file boundary.
"""

from __future__ import annotations


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shift)
            shift += 1
    return dict(zip(printable, map(chr, chars), strict=True))


BYTE_TO_CHAR: dict[int, str] = _bytes_to_unicode()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}

# HF's BpeTrainer numbers its byte alphabet by character, so this is each byte's place in
# HF's vocabulary; the trainers break ties in this order to agree with HF (see bpe_train).
HF_BYTE_ORDER: list[int] = [0] * 256
for _rank, _char in enumerate(sorted(BYTE_TO_CHAR.values())):
    HF_BYTE_ORDER[CHAR_TO_BYTE[_char]] = _rank


def to_chars(token: bytes) -> str:
    """b' the' -> 'Ġthe'."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def from_chars(text: str) -> bytes:
    """'Ġthe' -> b' the'; KeyError for a character outside the map."""
    return bytes(CHAR_TO_BYTE[c] for c in text)


def visible(token: bytes) -> str:
    """A token for people: printable text as is, other bytes as <0xNN> (for vocab.txt and the CLI)."""
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(b) if 0x21 <= b < 0x7F else f"<0x{b:02X}>" for b in token)
    return "".join("␣" if c == " " else c if c.isprintable() else "".join(f"<0x{b:02X}>" for b in c.encode())
                   for c in text)
