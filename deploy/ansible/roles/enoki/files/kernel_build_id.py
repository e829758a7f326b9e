#!/usr/bin/python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Prints the running kernel's GNU build id, from its ELF notes: what the
scheduler modules record and `enoki load` compares (two builds of one
kernel release differ only there)."""
import struct

with open("/sys/kernel/notes", "rb") as f:
    data = f.read()
off = 0
while off + 12 <= len(data):
    namesz, descsz, ntype = struct.unpack_from("<III", data, off)
    off += 12
    name = data[off:off + namesz].rstrip(b"\0")
    off += (namesz + 3) & ~3
    desc = data[off:off + descsz]
    off += (descsz + 3) & ~3
    if name == b"GNU" and ntype == 3:
        print(desc.hex())
        break
