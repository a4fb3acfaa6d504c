#!/usr/bin/env python3
"""Rewrites CUDA launches `kern<T, 1><<<grid, block, shm, stream>>>(args);` into
`emu_launch(grid, block, [&] { kern<T, 1>(args); });` for the CPU emulator
(cuda_emu.h). Usage: emu_transform.py in.cu out.cpp"""
import sys


def back_name(s, i):
    """Start index of the (possibly templated) callee ending just before i."""
    j = i
    if s[j - 1] == '>':
        depth = 0
        while True:
            j -= 1
            if s[j] == '>':
                depth += 1
            elif s[j] == '<':
                depth -= 1
                if depth == 0:
                    break
    while j > 0 and (s[j - 1].isalnum() or s[j - 1] in '_:'):
        j -= 1
    return j


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{<':
            depth += 1
        elif ch in ')]}>':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def transform(s):
    out = ''
    pos = 0
    while True:
        i = s.find('<<<', pos)
        if i < 0:
            return out + s[pos:]
        start = back_name(s, i)
        name = s[start:i]
        j = s.index('>>>', i)
        cfg = split_top(s[i + 3:j])
        k = j + 3
        assert s[k] == '(', s[k:k + 20]
        depth = 0
        m = k
        while True:
            if s[m] == '(':
                depth += 1
            elif s[m] == ')':
                depth -= 1
                if depth == 0:
                    break
            m += 1
        args = s[k + 1:m]
        out += s[pos:start] + 'emu_launch(%s, %s, [&] { %s(%s); })' % (cfg[0], cfg[1], name, args)
        pos = m + 1


src = open(sys.argv[1]).read()
open(sys.argv[2], 'w').write('#include "cuda_emu.h"\n' + transform(src))
