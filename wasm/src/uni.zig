// Unicode helpers backed by the tables that build.py generates from Python's
// unicodedata.  ASCII has a flag byte per character so the common case never
// reaches a binary search.

const t = @import("unicode_tables.zig");
const mem = @import("mem.zig");

const LETTER: u8 = 1;
const NUMBER: u8 = 2;
const SPACE: u8 = 4;
const PUNCT_ASCII: u8 = 8;
const CONTROL: u8 = 16;

fn inRanges(r: []const u32, c: u32) bool {
    var lo: usize = 0;
    var hi: usize = r.len / 2;
    while (lo < hi) {
        const mid = (lo + hi) / 2;
        if (c < r[2 * mid]) {
            hi = mid;
        } else if (c > r[2 * mid + 1]) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

fn find(keys: []const u32, c: u32) ?usize {
    var lo: usize = 0;
    var hi: usize = keys.len;
    while (lo < hi) {
        const mid = (lo + hi) / 2;
        if (c < keys[mid]) {
            hi = mid;
        } else if (c > keys[mid]) {
            lo = mid + 1;
        } else {
            return mid;
        }
    }
    return null;
}

pub fn isLetter(c: u32) bool {
    if (c < 128) return t.ascii_flags[c] & LETTER != 0;
    return inRanges(&t.letter, c);
}

pub fn isNumber(c: u32) bool {
    if (c < 128) return t.ascii_flags[c] & NUMBER != 0;
    return inRanges(&t.number, c);
}

/// Unicode White_Space (Oniguruma `\s`, Rust `char::is_whitespace`).
pub fn isSpace(c: u32) bool {
    if (c < 128) return t.ascii_flags[c] & SPACE != 0;
    return inRanges(&t.white_space, c);
}

/// BERT punctuation: any non-alphanumeric printable ASCII, or a Unicode P* char.
pub fn isBertPunct(c: u32) bool {
    if (c < 128) return t.ascii_flags[c] & PUNCT_ASCII != 0;
    return inRanges(&t.punct, c);
}

/// General category C* (control, format, surrogate, private use, unassigned).
pub fn isOther(c: u32) bool {
    if (c < 128) return t.ascii_flags[c] & CONTROL != 0;
    return inRanges(&t.other, c);
}

pub fn isNonspacingMark(c: u32) bool {
    if (c < 0x300) return false;
    return inRanges(&t.mark_nonspacing, c);
}

/// The CJK blocks BERT surrounds with spaces: the original BERT list, except
/// that the block after Extension D starts at U+2B920 as in the reference
/// `tokenizers` implementation (BERT itself says U+2B820).
pub fn isCjk(c: u32) bool {
    return (c >= 0x4E00 and c <= 0x9FFF) or (c >= 0x3400 and c <= 0x4DBF) or
        (c >= 0x20000 and c <= 0x2A6DF) or (c >= 0x2A700 and c <= 0x2B73F) or
        (c >= 0x2B740 and c <= 0x2B81F) or (c >= 0x2B920 and c <= 0x2CEAF) or
        (c >= 0xF900 and c <= 0xFAFF) or (c >= 0x2F800 and c <= 0x2FA1F);
}

pub const Char = struct { cp: u32, len: u32 };

/// Length of the longest valid UTF-8 prefix of `s` (== s.len when all of it
/// is valid).  Strict, as Python's codec: no overlong forms, no surrogates
/// (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequences.  `encode`
/// refuses anything else, so one rule holds for every host (see docs/wasm.md).
pub fn validUtf8Prefix(s: []const u8) usize {
    var i: usize = 0;
    while (i < s.len) {
        const b0 = s[i];
        if (b0 < 0x80) {
            i += 1;
            continue;
        }
        // Sequence length and the allowed range of the second byte, which is
        // where overlong forms, surrogates and values past U+10FFFF show up.
        var n: usize = 0;
        var lo: u8 = 0x80;
        var hi: u8 = 0xBF;
        switch (b0) {
            0xC2...0xDF => n = 2,
            0xE0 => {
                n = 3;
                lo = 0xA0;
            },
            0xE1...0xEC, 0xEE...0xEF => n = 3,
            0xED => {
                n = 3;
                hi = 0x9F;
            },
            0xF0 => {
                n = 4;
                lo = 0x90;
            },
            0xF1...0xF3 => n = 4,
            0xF4 => {
                n = 4;
                hi = 0x8F;
            },
            else => return i,
        }
        if (i + n > s.len) return i;
        if (s[i + 1] < lo or s[i + 1] > hi) return i;
        var k: usize = 2;
        while (k < n) : (k += 1) {
            if (s[i + k] & 0xC0 != 0x80) return i;
        }
        i += n;
    }
    return i;
}

/// Decode one UTF-8 sequence at s[i].  Malformed input (the host only sends
/// valid UTF-8, but the module must not misbehave if it does not) decodes as
/// U+FFFD of length 1.
pub fn decode(s: []const u8, i: usize) Char {
    const bad = Char{ .cp = 0xFFFD, .len = 1 };
    const b0 = s[i];
    if (b0 < 0x80) return .{ .cp = b0, .len = 1 };
    var n: u32 = 0;
    var cp: u32 = 0;
    if (b0 & 0xE0 == 0xC0) {
        n = 2;
        cp = b0 & 0x1F;
    } else if (b0 & 0xF0 == 0xE0) {
        n = 3;
        cp = b0 & 0x0F;
    } else if (b0 & 0xF8 == 0xF0) {
        n = 4;
        cp = b0 & 0x07;
    } else {
        return bad;
    }
    if (i + n > s.len) return bad;
    var k: u32 = 1;
    while (k < n) : (k += 1) {
        const b = s[i + k];
        if (b & 0xC0 != 0x80) return bad;
        cp = (cp << 6) | (b & 0x3F);
    }
    return .{ .cp = cp, .len = n };
}

pub fn encode(cp: u32, out: *mem.Vec(u8)) mem.Error!void {
    try out.reserve(4);
    const p = out.ptr + out.len;
    if (cp < 0x80) {
        p[0] = @intCast(cp);
        out.len += 1;
    } else if (cp < 0x800) {
        p[0] = @intCast(0xC0 | (cp >> 6));
        p[1] = @intCast(0x80 | (cp & 0x3F));
        out.len += 2;
    } else if (cp < 0x10000) {
        p[0] = @intCast(0xE0 | (cp >> 12));
        p[1] = @intCast(0x80 | ((cp >> 6) & 0x3F));
        p[2] = @intCast(0x80 | (cp & 0x3F));
        out.len += 3;
    } else {
        p[0] = @intCast(0xF0 | (cp >> 18));
        p[1] = @intCast(0x80 | ((cp >> 12) & 0x3F));
        p[2] = @intCast(0x80 | ((cp >> 6) & 0x3F));
        p[3] = @intCast(0x80 | (cp & 0x3F));
        out.len += 4;
    }
}

/// Append the canonical (NFD) decomposition of `c`.
pub fn decompose(c: u32, out: *mem.Vec(u32)) mem.Error!void {
    if (c < 0xC0) return out.push(c);
    if (c >= 0xAC00 and c <= 0xD7A3) {
        const s = c - 0xAC00;
        try out.push(0x1100 + s / 588);
        try out.push(0x1161 + (s % 588) / 28);
        if (s % 28 != 0) try out.push(0x11A7 + s % 28);
        return;
    }
    if (find(&t.nfd_keys, c)) |k| {
        return out.appendSlice(t.nfd_pool[t.nfd_offs[k]..t.nfd_offs[k + 1]]);
    }
    return out.push(c);
}

pub fn combiningClass(c: u32) u8 {
    if (c < 0x300) return 0;
    if (find(&t.ccc_keys, c)) |k| return t.ccc_vals[k];
    return 0;
}

/// Canonical ordering: stable-sort every run of non-starters by combining class.
pub fn canonicalOrder(buf: []u32) void {
    var i: usize = 1;
    while (i < buf.len) : (i += 1) {
        const cc = combiningClass(buf[i]);
        if (cc == 0) continue;
        var j = i;
        while (j > 0) {
            const prev = combiningClass(buf[j - 1]);
            if (prev <= cc) break;
            const tmp = buf[j - 1];
            buf[j - 1] = buf[j];
            buf[j] = tmp;
            j -= 1;
        }
    }
}

/// Append the full (possibly multi-character) lowercase mapping of `c`.
pub fn lowercase(c: u32, out: *mem.Vec(u32)) mem.Error!void {
    if (c < 128) {
        return out.push(if (c >= 'A' and c <= 'Z') c + 32 else c);
    }
    if (find(&t.lower_keys, c)) |k| {
        return out.appendSlice(t.lower_pool[t.lower_offs[k]..t.lower_offs[k + 1]]);
    }
    return out.push(c);
}
