"""A minimal reader of R's XDR serialization, enough for the character vectors an R data package stores.

Used to read Jane Austen's novels from Debian's `r-cran-janeaustenr` lazy-load database without R or any
extra Python package: `read_r(zlib.decompress(rdb[offset + 4 : offset + length]))` -> list of lines.
"""

from __future__ import annotations

import struct


class _Reader:
    """Minimal reader of R's XDR serialization (format 2/3): the vector types a data package stores."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR stream")
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self._int(), self._int()
        if version == 3:
            n = self._int()
            self.pos += n

    def _int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def item(self):
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in (254, 242):  # NILVALUE, EMPTYENV
            return None
        if kind == 255:  # REFSXP
            ref = flags >> 8 or self._int()
            return self.refs[ref - 1]
        if kind == 1:  # SYMSXP
            sym = self.item()
            self.refs.append(sym)
            return sym
        if kind == 9:  # CHARSXP
            n = self._int()
            if n == -1:
                return None
            s = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
            self.pos += n
            return s
        if kind == 2:  # LISTSXP (pairlist): attr, tag, car, cdr
            out = {}
            while kind == 2:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag if tag is not None else len(out)] = self.item()
                flags = self._int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            if kind != 254:
                raise ValueError(f"unsupported pairlist tail type {kind}")
            return out
        if kind in (13, 10):  # INTSXP, LGLSXP
            n = self._int()
            value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == 14:  # REALSXP
            n = self._int()
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        elif kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            value = [self.item() for _ in range(self._int())]
        else:
            raise ValueError(f"unsupported R type {kind}")
        if has_attr:
            attrs = self.item()
            names = attrs.get("names") if isinstance(attrs, dict) else None
            if names:
                return dict(zip(names, value, strict=True))
        return value


def read_r(data: bytes):
    return _Reader(data).item()
