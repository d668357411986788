"""logdist's on-disk formats, written down in one place: a log record, the keys file, and
the leftover file.

A record is one stored part of a packet:

    count: u32, elen: u16, plen: u16            (little-endian)
    emitter_id (elen bytes), packet_id (plen)  the packet's dedup key, UTF-8; elen = 0xFFFF
                                               when the record carries none (only the LAST
                                               part of a packet with a packet_id has it)
    content hash: u64                          only when bit 30 of `count` is set: the hash of
                                               the packet's content (ledger.content_hash)
    tlen: u16, analyzer id (tlen bytes)        only when bit 31 of `count` is set: the
                                               analyzer the part was routed to
    data                                       the part's messages joined by b","

so that recovery gives back (count, key, content hash, part, target) without parsing JSON.
Records written before targets (or hashes) were kept decode with target "" (hash 0: unknown).

The keys file (`dedup.keys` in the log directory) is b"LDKEYS2\\n" followed, per key, by
`elen: u16, plen: u16, content hash: u64` and the two UTF-8 strings. A b"LDKEYS1\\n" file
(written before hashes were kept) has no hash field; its keys decode with hash 0.

A leftover file (`<state_dir>/leftover/*.left`, leftover.py) holds what a graceful stop could
not deliver: b"LDLEFT1\\n" followed, per part, by `len: u32, crc32: u32` and a record of the
format above (without a key), so a damaged file is detected, and loses only what is damaged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

from logdist.distributor.ledger import Key, Stamp

#: (messages joined by b",", count) or (..., count, id of the analyzer they were routed to)
Part = tuple[bytes, int] | tuple[bytes, int, str]

_HEAD = struct.Struct("<IHH")
_NO_KEY = 0xFFFF
_HAS_TARGET = 0x8000_0000
_HAS_HASH = 0x4000_0000
_HASH = struct.Struct("<Q")
_TLEN = struct.Struct("<H")
_KEY = struct.Struct("<HH")
_KEY_V2 = struct.Struct("<HHQ")
#: the keys file's magic (KEYS_MAGIC_V1: written before content hashes were kept)
KEYS_MAGIC = b"LDKEYS2\n"
KEYS_MAGIC_V1 = b"LDKEYS1\n"
KEYS_FILE = "dedup.keys"
LEFTOVER_MAGIC = b"LDLEFT1\n"
_LEFT_FRAME = struct.Struct("<II")  # a leftover record's header: len, crc32


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def encode_parts(parts: Sequence[Part], key: Key | None, content_hash: int = 0) -> list[bytes]:
    """The log records of one packet's parts; the LAST one carries the dedup key (and the
    content hash, when not 0). The parts of a packet are consecutive records written by one
    write(): when a kill -9 tears that write, the records before the tear survive and the rest
    do not. With the key on the last part, recovery remembers the packet as stored only if
    every part of it survived; a retry of a packet that lost a part is then stored again
    instead of being answered "duplicate"."""
    out = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        data, count = part[0], part[1]
        target = _utf8(part[2]) if len(part) > 2 else b""
        tlen = b""
        if target and len(target) < 0xFFFF:
            count |= _HAS_TARGET
            tlen = _TLEN.pack(len(target))
        else:
            target = b""
        e = p = h = b""
        head = _HEAD.pack(count, _NO_KEY, 0)
        if i == last and key is not None:
            e, p = _utf8(key[0]), _utf8(key[1])
            if len(e) < _NO_KEY and len(p) < _NO_KEY:
                if content_hash:
                    count |= _HAS_HASH
                    h = _HASH.pack(content_hash)
                head = _HEAD.pack(count, len(e), len(p))
            else:  # too long to keep: stored without a key
                e = p = b""
        out.append(b"".join((head, e, p, h, tlen, target, data)))  # the one copy of the data
    return out


def decode_record(payload: bytes) -> tuple[int, Key | None, int, bytes, str]:
    """(count, dedup key or None, content hash or 0, part, target analyzer id or "") of one log
    record. Raises struct.error or ValueError when `payload` is not one."""
    count, elen, plen = _HEAD.unpack_from(payload)
    pos = _HEAD.size
    key: Key | None = None
    if elen != _NO_KEY:
        if pos + elen + plen > len(payload):
            raise ValueError("dedup key runs past the end of the record")
        e = payload[pos : pos + elen].decode("utf-8", "surrogatepass")
        p = payload[pos + elen : pos + elen + plen].decode("utf-8", "surrogatepass")
        key = (e, p)
        pos += elen + plen
    content_hash = 0
    if count & _HAS_HASH:
        if key is None:
            raise ValueError("content hash without a dedup key")
        (content_hash,) = _HASH.unpack_from(payload, pos)
        pos += _HASH.size
    target = ""
    if count & _HAS_TARGET:
        (tlen,) = _TLEN.unpack_from(payload, pos)
        pos += _TLEN.size
        if pos + tlen > len(payload):
            raise ValueError("analyzer id runs past the end of the record")
        target = payload[pos : pos + tlen].decode("utf-8", "surrogatepass")
        pos += tlen
    return count & ~(_HAS_TARGET | _HAS_HASH), key, content_hash, payload[pos:], target


def record_messages(payloads: Iterable[bytes]) -> int:
    """The messages in these records (those that are not logdist records count 0)."""
    n = 0
    for p in payloads:
        try:
            n += decode_record(p)[0]
        except (struct.error, ValueError):
            continue
    return n


_LOG_FRAME = struct.Struct("<IIQ")  # a log frame's header: len, crc, lsn (crates/wlb/src/wal.rs)


def lost_messages(data: bytes, lsns: Iterable[int]) -> tuple[int, int]:
    """(messages, records) that can still be told of the lost records `lsns`, from the first
    bytes `data` of the damaged stretch that held them (Wal.recovery_losses): the frames are
    walked by their length fields, and a record counts when its frame names one of `lsns` and
    its message count is plausible (each message takes at least 2 bytes). The other lost
    records held an unknown number of messages."""
    want = set(lsns)
    messages = records = pos = 0
    while pos + _LOG_FRAME.size <= len(data):
        length, _, lsn = _LOG_FRAME.unpack_from(data, pos)
        start = pos + _LOG_FRAME.size
        if length > len(data) - start:
            break
        if lsn in want:
            want.discard(lsn)
            try:
                count, _, _, part, _ = decode_record(data[start : start + length])
            except (struct.error, ValueError):
                count, part = -1, b""
            if 0 < count <= (len(part) + 1) // 2:
                messages += count
                records += 1
        pos = start + length
    return messages, records


def encode_keys(stamps: Iterable[Stamp], *, header: bool) -> bytes:
    """Keys with their content hash for the keys file (with its magic first when `header`);
    over-long keys are left out."""
    out = bytearray(KEYS_MAGIC if header else b"")
    for (emitter_id, packet_id), content_hash in stamps:
        e, p = _utf8(emitter_id), _utf8(packet_id)
        if len(e) < _NO_KEY and len(p) < _NO_KEY:
            out += _KEY_V2.pack(len(e), len(p), content_hash) + e + p
    return bytes(out)


class KeysFileError(ValueError):
    """The keys file is not one (`cut_short` False), or is cut short (`stamps` holds those read
    before the cut)."""

    def __init__(self, detail: str, stamps: list[Stamp], *, cut_short: bool) -> None:
        super().__init__(detail)
        self.stamps = stamps
        self.cut_short = cut_short


def decode_keys(raw: bytes) -> list[Stamp]:
    """The keys of a keys file with their content hash (0 in a file written before hashes
    were kept), oldest first. Raises KeysFileError."""
    if raw.startswith(KEYS_MAGIC):
        head, hashed = _KEY_V2, True
    elif raw.startswith(KEYS_MAGIC_V1):
        head, hashed = _KEY, False
    else:
        raise KeysFileError("not a keys file", [], cut_short=False)
    stamps: list[Stamp] = []
    pos = len(KEYS_MAGIC)
    content_hash = 0
    try:
        while pos < len(raw):
            if hashed:
                elen, plen, content_hash = head.unpack_from(raw, pos)
            else:
                elen, plen = head.unpack_from(raw, pos)
            pos += head.size
            if pos + elen + plen > len(raw):
                raise ValueError("cut short")
            e = raw[pos : pos + elen].decode("utf-8", "surrogatepass")
            p = raw[pos + elen : pos + elen + plen].decode("utf-8", "surrogatepass")
            pos += elen + plen
            stamps.append(((e, p), content_hash))
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise KeysFileError("cut short", stamps, cut_short=True) from exc
    return stamps


def encode_leftover(parts: Iterable[Part]) -> bytes:
    """A leftover file: its magic, then each part as a framed record (length, CRC-32)."""
    out = [LEFTOVER_MAGIC]
    for part in parts:
        (rec,) = encode_parts([part], None)
        out.append(_LEFT_FRAME.pack(len(rec), zlib.crc32(rec)))
        out.append(rec)
    return b"".join(out)


class LeftoverFileError(ValueError):
    """A leftover file that is not one, or is damaged: `parts` holds those read before the
    damage."""

    def __init__(self, detail: str, parts: list[tuple[bytes, int, str]]) -> None:
        super().__init__(detail)
        self.parts = parts


def decode_leftover(raw: bytes) -> list[tuple[bytes, int, str]]:
    """The parts of a leftover file: (messages joined by b",", count, target analyzer id or "").
    Raises LeftoverFileError."""
    if not raw.startswith(LEFTOVER_MAGIC):
        raise LeftoverFileError("not a leftover file", [])
    parts: list[tuple[bytes, int, str]] = []
    pos = len(LEFTOVER_MAGIC)
    while pos < len(raw):
        try:
            size, crc = _LEFT_FRAME.unpack_from(raw, pos)
        except struct.error:
            raise LeftoverFileError(f"cut short at offset {pos}", parts) from None
        rec = raw[pos + _LEFT_FRAME.size : pos + _LEFT_FRAME.size + size]
        if len(rec) != size or zlib.crc32(rec) != crc:
            raise LeftoverFileError(f"damaged record at offset {pos}", parts)
        try:
            count, _, _, data, target = decode_record(rec)
        except (struct.error, ValueError) as exc:
            raise LeftoverFileError(f"bad record at offset {pos}: {exc}", parts) from exc
        parts.append((data, count, target))
        pos += _LEFT_FRAME.size + size
    return parts
