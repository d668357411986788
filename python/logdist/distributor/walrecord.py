"""The write-ahead log's formats, written down in one place: a record and the keys file.

A record is one stored part of a packet:

    count: u32, elen: u16, plen: u16            (little-endian)
    emitter_id (elen bytes), packet_id (plen)  the packet's dedup key, UTF-8; elen = 0xFFFF
                                               when the record carries none (only the LAST
                                               part of a packet with a packet_id has it)
    tlen: u16, analyzer id (tlen bytes)        only when bit 31 of `count` is set: the
                                               analyzer the part was routed to
    data                                       the part's messages joined by b","

so that recovery gives back (count, key, part, target) without parsing JSON. Records without
the target bit (written before targets were kept) decode with target "".

The keys file (`dedup.keys` in the log directory) is b"LDKEYS1\\n" followed, per key, by
`elen: u16, plen: u16` and the two UTF-8 strings.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from logdist.distributor.ledger import Key

#: (messages joined by b",", count) or (..., count, id of the analyzer they were routed to)
Part = tuple[bytes, int] | tuple[bytes, int, str]

_HEAD = struct.Struct("<IHH")
_NO_KEY = 0xFFFF
_HAS_TARGET = 0x8000_0000
_TLEN = struct.Struct("<H")
_KEY = struct.Struct("<HH")
KEYS_MAGIC = b"LDKEYS1\n"
KEYS_FILE = "dedup.keys"


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def encode_parts(parts: Sequence[Part], key: Key | None) -> list[bytes]:
    """The log records of one packet's parts; the LAST one carries the dedup key. The parts of
    a packet are consecutive records written by one write(): when a kill -9 tears that write,
    the records before the tear survive and the rest do not. With the key on the last part,
    recovery remembers the packet as stored only if every part of it survived; a retry of a
    packet that lost a part is then stored again instead of being answered "duplicate"."""
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
        e = p = b""
        head = _HEAD.pack(count, _NO_KEY, 0)
        if i == last and key is not None:
            e, p = _utf8(key[0]), _utf8(key[1])
            if len(e) < _NO_KEY and len(p) < _NO_KEY:
                head = _HEAD.pack(count, len(e), len(p))
            else:  # too long to keep: stored without a key
                e = p = b""
        out.append(b"".join((head, e, p, tlen, target, data)))  # the one copy of the data
    return out


def decode_record(payload: bytes) -> tuple[int, Key | None, bytes, str]:
    """(count, dedup key or None, part, target analyzer id or "") of one log record.
    Raises struct.error or ValueError when `payload` is not one."""
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
    target = ""
    if count & _HAS_TARGET:
        count &= ~_HAS_TARGET
        (tlen,) = _TLEN.unpack_from(payload, pos)
        pos += _TLEN.size
        if pos + tlen > len(payload):
            raise ValueError("analyzer id runs past the end of the record")
        target = payload[pos : pos + tlen].decode("utf-8", "surrogatepass")
        pos += tlen
    return count, key, payload[pos:], target


def record_messages(payloads: Iterable[bytes]) -> int:
    """The messages in these records (those that are not logdist records count 0)."""
    n = 0
    for p in payloads:
        try:
            n += decode_record(p)[0]
        except (struct.error, ValueError):
            continue
    return n


_FRAME = struct.Struct("<IIQ")  # a log frame's header: len, crc, lsn (crates/wlb/src/wal.rs)


def lost_messages(data: bytes, lsns: Iterable[int]) -> tuple[int, int]:
    """(messages, records) that can still be told of the lost records `lsns`, from the first
    bytes `data` of the damaged stretch that held them (Wal.recovery_losses): the frames are
    walked by their length fields, and a record counts when its frame names one of `lsns` and
    its message count is plausible (each message takes at least 2 bytes). The other lost
    records held an unknown number of messages."""
    want = set(lsns)
    messages = records = pos = 0
    while pos + _FRAME.size <= len(data):
        length, _, lsn = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        if length > len(data) - start:
            break
        if lsn in want:
            want.discard(lsn)
            try:
                count, _, part, _ = decode_record(data[start : start + length])
            except (struct.error, ValueError):
                count, part = -1, b""
            if 0 < count <= (len(part) + 1) // 2:
                messages += count
                records += 1
        pos = start + length
    return messages, records


def encode_keys(keys: Iterable[Key], *, header: bool) -> bytes:
    """Keys for the keys file (with its magic first when `header`); over-long keys are left out."""
    out = bytearray(KEYS_MAGIC if header else b"")
    for k in keys:
        e, p = _utf8(k[0]), _utf8(k[1])
        if len(e) < _NO_KEY and len(p) < _NO_KEY:
            out += _KEY.pack(len(e), len(p)) + e + p
    return bytes(out)


class KeysFileError(ValueError):
    """The keys file is not one (`cut_short` False), or is cut short (`keys` holds those read
    before the cut)."""

    def __init__(self, detail: str, keys: list[Key], *, cut_short: bool) -> None:
        super().__init__(detail)
        self.keys = keys
        self.cut_short = cut_short


def decode_keys(raw: bytes) -> list[Key]:
    """The keys of a keys file, oldest first. Raises KeysFileError."""
    if not raw.startswith(KEYS_MAGIC):
        raise KeysFileError("not a keys file", [], cut_short=False)
    keys: list[Key] = []
    pos = len(KEYS_MAGIC)
    try:
        while pos < len(raw):
            elen, plen = _KEY.unpack_from(raw, pos)
            pos += _KEY.size
            if pos + elen + plen > len(raw):
                raise ValueError("cut short")
            e = raw[pos : pos + elen].decode("utf-8", "surrogatepass")
            p = raw[pos + elen : pos + elen + plen].decode("utf-8", "surrogatepass")
            pos += elen + plen
            keys.append((e, p))
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise KeysFileError("cut short", keys, cut_short=True) from exc
    return keys
