"""The weight image a board reads from its SPI configuration flash at power-up (host side).

Boards whose weight memories the bitstream cannot initialise (the iCEBreaker's SPRAM) load the
weights from the configuration flash, at :data:`DEFAULT_IMAGE_OFFSET` after the bitstream, through
the core's weight port (gateware: :class:`gru_hw.boards.flash.FlashLoader`). The image::

    offset 0          magic b"GRUW" (4 bytes)
    4                 format version, 1 (1 byte)
    5                 word_bytes (1 byte)
    6                 n: words (4 bytes, little-endian)
    10                model hash (8 bytes: the build's IDENTIFY descriptor model_hash)
    18                n words, word_bytes each, little-endian two's complement
    18 + n*wb         CRC-16/CCITT-FALSE (:func:`gru_hw.protocol.crc16`) of bytes [4, 18 + n*wb)
                      (everything after the magic), 2 bytes MSB first

Sent MSB first, the CRC makes the CRC of everything after the magic 0 (the residue): the gateware
checks that. The loader's outcome is one of the ``BOOT_*`` states.
"""

from __future__ import annotations

import operator
import struct

import numpy as np

from .errors import GruHwError
from .protocol import crc16, pack_ints, unpack_ints

IMAGE_MAGIC = b"GRUW"
IMAGE_VERSION = 1
#: 1 MiB: after the iCE40 UP5K bitstream (104,090 bytes), on a 64 KiB erase-block boundary
DEFAULT_IMAGE_OFFSET = 0x100000
MODEL_HASH_BYTES = 8

_HEADER = struct.Struct("<4sBBI8s")  # magic, version, word_bytes, words, model hash
_TRAILER = struct.Struct(">H")      # CRC, MSB first
#: bytes before the first word
HEADER_BYTES = _HEADER.size
#: bytes after the last word (the CRC)
TRAILER_BYTES = _TRAILER.size
#: the bytes the CRC starts after
MAGIC_BYTES = len(IMAGE_MAGIC)

# ---- the loader's outcome (gateware ``state``) ---------------------------------------------------
BOOT_OK = 0        #: the image is loaded and its CRC is right
BOOT_LOADING = 1   #: from reset until the loader decides
BOOT_MISSING = 2   #: no magic at the image offset: no image (erased flash?); nothing written
BOOT_MISMATCH = 3  #: version, word size, word count or model hash differ from the build's
BOOT_CORRUPT = 4   #: the words were written but the CRC is wrong: the weights are garbage
BOOT_STATE_NAMES = {
    BOOT_OK: "weights loaded",
    BOOT_LOADING: "loading weights",
    BOOT_MISSING: "no weight image in flash (erased flash?)",
    BOOT_MISMATCH: "weight image made for another build",
    BOOT_CORRUPT: "weight image corrupt (bad CRC)",
}


def _count(words) -> int:
    """Return the number of words: ``words`` is a count or a sequence of words."""
    try:
        return operator.index(words)
    except TypeError:
        return len(words)


def image_bytes(words, word_bytes: int) -> int:
    """Return the size of an image of ``words`` (a count, or the words) of ``word_bytes`` each."""
    return HEADER_BYTES + _count(words) * word_bytes + TRAILER_BYTES


def _check_word_bytes(word_bytes: int) -> None:
    if not 1 <= word_bytes <= 8:
        raise GruHwError(f"weight image words take 1 to 8 bytes, not {word_bytes}",
                         subject="word_bytes")


def image_header(words, word_bytes: int, model_hash: bytes) -> bytes:
    """Return the first :data:`HEADER_BYTES` bytes of an image of ``words`` (a count, or the
    words) of ``word_bytes`` each for ``model_hash``: what the gateware expects to read."""
    _check_word_bytes(word_bytes)
    model_hash = bytes(model_hash)
    if len(model_hash) != MODEL_HASH_BYTES:
        raise GruHwError(f"the model hash takes {MODEL_HASH_BYTES} bytes, not {len(model_hash)}",
                         subject="model_hash")
    n = _count(words)
    if not 1 <= n < 1 << 32:
        raise GruHwError(f"a weight image holds 1 to 2**32 - 1 words, not {n}", subject="words")
    return _HEADER.pack(IMAGE_MAGIC, IMAGE_VERSION, word_bytes, n, model_hash)


def build_image(words, word_bytes: int, model_hash: bytes) -> bytes:
    """Return the flash image of ``words`` (signed ints, ``word_bytes`` each) for ``model_hash``.

    A word that does not fit in ``word_bytes`` bytes (two's complement) is an error, not cut.
    """
    vals = [int(w) for w in np.asarray(words).ravel()]
    head = image_header(len(vals), word_bytes, model_hash)
    lo, hi = -(1 << (8 * word_bytes - 1)), (1 << (8 * word_bytes - 1)) - 1
    bad = [(i, v) for i, v in enumerate(vals) if not lo <= v <= hi]
    if bad:
        i, v = bad[0]
        raise GruHwError(f"weight word {i} = {v} does not fit {word_bytes} bytes "
                         f"({len(bad)} words out of [{lo}, {hi}])", subject="words")
    body = head + pack_ints(np.array(vals, dtype=np.int64), word_bytes)
    return body + _TRAILER.pack(crc16(body[MAGIC_BYTES:]))


def parse_image(data: bytes, *, word_bytes: int | None = None, words: int | None = None,
                model_hash: bytes | None = None) -> list[int]:
    """Return the words of a flash image (signed ints of ``8 * word_bytes`` bits).

    ``data`` starts at the image; bytes after its CRC are ignored (a flash dump). ``word_bytes``,
    ``words`` (a count) and ``model_hash``, when given, must be the image's. Raises
    :class:`GruHwError` naming what is wrong: no magic (an erased flash reads 0xFF), another
    format version or build, a truncated image, a bad CRC.
    """
    data = bytes(data)
    if len(data) < MAGIC_BYTES and IMAGE_MAGIC.startswith(data) and data:
        raise GruHwError(f"weight image truncated: {len(data)} bytes of the magic")
    if data[:MAGIC_BYTES] != IMAGE_MAGIC:
        raise GruHwError(f"no weight image (erased flash?): the image starts {data[:4].hex()!r}, "
                         f"not the magic {IMAGE_MAGIC!r}")
    if len(data) < HEADER_BYTES:
        raise GruHwError(f"weight image truncated: {len(data)} bytes, shorter than its "
                         f"{HEADER_BYTES}-byte header")
    _, version, wb, n, mhash = _HEADER.unpack_from(data)
    if version != IMAGE_VERSION:
        raise GruHwError(f"weight image format version {version}; this build reads version "
                         f"{IMAGE_VERSION}")
    if not 1 <= wb <= 8:
        raise GruHwError(f"weight image header is wrong: {wb}-byte words")
    if word_bytes is not None and wb != word_bytes:
        raise GruHwError(f"weight image has {wb}-byte words, the build takes {word_bytes}-byte "
                         f"words")
    if words is not None and n != words:
        raise GruHwError(f"weight image has {n} words, the build takes {words}")
    if model_hash is not None and mhash != bytes(model_hash):
        raise GruHwError(f"weight image is for model {mhash.hex()}, the build holds model "
                         f"{bytes(model_hash).hex()}")
    size = image_bytes(n, wb)
    if len(data) < size:
        raise GruHwError(f"weight image truncated: {len(data)} bytes of {size} "
                         f"({n} words of {wb} bytes, header and CRC)")
    end = HEADER_BYTES + n * wb
    want = crc16(data[MAGIC_BYTES:end])
    (got,) = _TRAILER.unpack_from(data, end)
    if got != want:
        raise GruHwError(f"weight image corrupt: bad CRC (stored 0x{got:04x}, computed "
                         f"0x{want:04x})")
    return [int(v) for v in unpack_ints(data[HEADER_BYTES:end], wb, 8 * wb)]
