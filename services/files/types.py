"""What an uploaded file is, decided from its first bytes, never from its name or the client's Content-Type:
jpg, png, gif, webp, pdf, txt, md, mp3, wav, m4a; and which upload categories take which types.

A small table of signatures rather than a sniffing library: the ten types are fixed, each is recognised by
a handful of well-documented leading bytes, and a library (`filetype`, `puremagic`) knows hundreds of
formats we would have to filter out again, while still being unable to tell text from binary, Markdown
from plain text or HTML from text, which are the checks that matter here. The table is checked by tests.

Only the first `SNIFF_BYTES` bytes are needed (4096; fewer when the file is shorter, then pass
`complete=True`): every signature lies in the first 16 bytes, an MP3 without an ID3 tag is confirmed by
its second frame header (at most 1441 bytes in), and text is judged on the whole chunk.

- Binary types need their signature; a name never turns binary into text or text into an image.
- Text is UTF-8 (an optional byte order mark) that decodes, holds no NUL and almost no other control
  characters. It is `md` only when the name ends in .md or .markdown, otherwise `txt`.
- HTML, SVG and XML are never accepted as anything: text that opens with markup (`<` then a letter, `!`,
  `?` or `/`, after white space), or that carries one of the tags browsers sniff as HTML in its first
  512 bytes, is refused, whatever the file is called.
- An MPEG-4 file is `m4a` when its `ftyp` box names an iTunes audio brand (M4A, M4B, M4P); a generic
  brand (isom, iso2, mp41, mp42), which phones also write for voice recordings, counts only when the
  name ends in .m4a, because video carries the same brands."""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SNIFF_BYTES = 4096
# How far into the text the tags browsers treat as HTML are looked for (their sniffers look this far or less).
MARKUP_SCAN_BYTES = 512


class UnsupportedType(ValueError):
    """The content is not one of the supported types, or not one this category takes. The message can be
    shown to the user."""


@dataclass(frozen=True)
class FileType:
    kind: str  # jpg, png, gif, webp, pdf, txt, md, mp3, wav, m4a
    content_type: str
    extension: str

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS


TYPES: Mapping[str, FileType] = {
    kind: FileType(kind, content_type, kind)
    for kind, content_type in (
        ("jpg", "image/jpeg"),
        ("png", "image/png"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("pdf", "application/pdf"),
        ("txt", "text/plain"),
        ("md", "text/markdown"),
        ("mp3", "audio/mpeg"),
        ("wav", "audio/wav"),
        ("m4a", "audio/mp4"),
    )
}
IMAGE_KINDS = frozenset({"jpg", "png", "gif", "webp"})
CATEGORY_KINDS: Mapping[str, frozenset[str]] = {
    "avatar": IMAGE_KINDS,
    "persona_image": IMAGE_KINDS,
    "knowledge_base": frozenset({"txt", "md", "pdf"}),
    "chat_attachment": frozenset(TYPES),
}

_SUPPORTED = ", ".join(TYPES)
_M4A_BRANDS = frozenset({b"M4A ", b"M4B ", b"M4P "})
_GENERIC_MP4_BRANDS = frozenset({b"isom", b"iso2", b"mp41", b"mp42"})
_WEBP_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")
# C0 controls that never appear in text; tab, line feed, form feed, carriage return and escape may.
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_LEADING_MARKUP = re.compile(r"<[A-Za-z!?/]")
_HTML_TAGS = re.compile(
    r"<(?:!doctype|\?xml|html|head|body|script|iframe|svg|object|embed|meta|style|link|frameset|xml)[\s>/]",
    re.IGNORECASE,
)
# Layer III bit rates (kbit/s) by bit-rate index, MPEG-1 and MPEG-2/2.5; sample rates by version.
_MP3_BITRATES = {
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _is_png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n") and (len(head) < 16 or head[12:16] == b"IHDR")


def _is_jpg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _is_gif(head: bytes) -> bool:
    return head.startswith((b"GIF87a", b"GIF89a"))


def _is_webp(head: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == b"WEBP" and head[12:16] in _WEBP_CHUNKS


def _is_wav(head: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == b"WAVE"


def _is_pdf(head: bytes) -> bool:
    return head.startswith(b"%PDF-")


def _mp4_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of a leading `ftyp` box, or nothing when there is none."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    (size,) = struct.unpack(">I", head[:4])
    if size < 16 or (size - 16) % 4:
        return set()
    box = head[8 : min(size, len(head))]
    brands = {box[:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    return brands


def _mp3_frame_length(header: bytes) -> int | None:
    """The length of the MPEG audio Layer III frame whose 4-byte header this is, or None when it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 0: MPEG-2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
    layer = (header[1] >> 1) & 3  # 1: Layer III
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    bitrate = _MP3_BITRATES[3 if version == 3 else 2][bitrate_index] * 1000
    sample_rate = _MP3_SAMPLE_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    return (144 if version == 3 else 72) * bitrate // sample_rate + padding


def _is_mp3(head: bytes) -> bool:
    if head.startswith(b"ID3"):
        # ID3v2: version 2-4, a revision, flags, then a size of four 7-bit bytes.
        return len(head) >= 10 and head[3] in (2, 3, 4) and head[4] != 0xFF and all(b < 0x80 for b in head[6:10])
    length = _mp3_frame_length(head[:4])
    if length is None:
        return False
    # A second frame header where the first frame ends, unless the chunk stops before it.
    return len(head) < length + 4 or _mp3_frame_length(head[length : length + 4]) is not None


_SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("png", _is_png),
    ("jpg", _is_jpg),
    ("gif", _is_gif),
    ("webp", _is_webp),
    ("pdf", _is_pdf),
    ("wav", _is_wav),
    ("mp3", _is_mp3),
)


def _text(head: bytes, *, complete: bool) -> str | None:
    """The chunk decoded when it is UTF-8 text, else None. A chunk cut from a longer file may end inside a
    character; only a whole file must decode to the last byte."""
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=complete)
    except UnicodeDecodeError:
        return None
    if len(_CONTROL.findall(text)) > max(4, len(text) // 100):
        return None
    return text


def _is_markup(text: str) -> bool:
    return bool(_LEADING_MARKUP.match(text.lstrip())) or bool(_HTML_TAGS.search(text[:MARKUP_SCAN_BYTES]))


def _named(filename: str | None, *suffixes: str) -> bool:
    return (filename or "").strip().lower().endswith(suffixes)


def sniff(head: bytes, *, filename: str | None = None, complete: bool = False) -> FileType:
    """The type of a file from its first bytes (at least `SNIFF_BYTES` of them, or the whole file with
    `complete=True`). The name only chooses between md and txt, and lets a generic MPEG-4 be m4a.
    Raises UnsupportedType."""
    if not head:
        raise UnsupportedType("the file is empty")
    for kind, matches in _SIGNATURES:
        if matches(head):
            return TYPES[kind]
    brands = _mp4_brands(head)
    if brands & _M4A_BRANDS or (brands & _GENERIC_MP4_BRANDS and _named(filename, ".m4a")):
        return TYPES["m4a"]
    if brands:
        brand = head[8:12].decode("latin-1").strip()
        raise UnsupportedType(f"an MPEG-4 file of brand {brand!r} is not supported; audio is accepted as .m4a")
    text = _text(head, complete=complete)
    if text is None:
        raise UnsupportedType(f"the file is not one of the supported types ({_SUPPORTED})")
    if _is_markup(text):
        raise UnsupportedType("HTML, SVG and XML files are not accepted")
    return TYPES["md"] if _named(filename, ".md", ".markdown") else TYPES["txt"]


def check_category(file_type: FileType, category: str) -> None:
    """Raises UnsupportedType when `category` does not take this type; ValueError for an unknown category."""
    try:
        kinds = CATEGORY_KINDS[category]
    except KeyError as err:
        raise ValueError(f"unknown upload category {category!r}") from err
    if file_type.kind not in kinds:
        raise UnsupportedType(f"a {category} cannot be a {file_type.kind} file; it takes {', '.join(sorted(kinds))}")


def sniff_for(category: str, head: bytes, *, filename: str | None = None, complete: bool = False) -> FileType:
    """`sniff`, then `check_category`."""
    file_type = sniff(head, filename=filename, complete=complete)
    check_category(file_type, category)
    return file_type
