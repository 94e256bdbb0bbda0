// Byte-level BPE (GPT-2 family): the GPT-2 pre-tokenizer split, optional digit
// isolation (SmolLM2 / StarCoder style), merges by rank, and the byte-level
// decoder.  Merging works directly on raw bytes: the byte <-> printable-char
// alphabet is a bijection, so only the vocabulary strings need translating.

const mem = @import("mem.zig");
const uni = @import("uni.zig");
const sm = @import("strmap.zig");
const st = @import("state.zig");

pub const Config = struct {
    add_prefix_space: bool = false,
    use_regex: bool = true,
    digits: u32 = 0, // 0 none, 1 each digit alone, 2 runs of digits
    ignore_merges: bool = false,
    unk_id: i64 = -1,
};

var cfg: Config = .{};
var merges: sm.PairMap = undefined;
var byte_char: [256]u32 = undefined;
var char_byte: [324]i16 = undefined; // byte-level alphabet stays below U+0144
var byte_id: [256]i64 = undefined;

fn initAlphabet() void {
    @memset(&char_byte, -1);
    var extra: u32 = 0;
    var b: u32 = 0;
    while (b < 256) : (b += 1) {
        const printable = (b >= 0x21 and b <= 0x7E) or (b >= 0xA1 and b <= 0xAC) or (b >= 0xAE);
        if (printable) {
            byte_char[b] = b;
        } else {
            byte_char[b] = 256 + extra;
            extra += 1;
        }
        char_byte[byte_char[b]] = @intCast(b);
    }
}

/// Raw bytes -> the vocabulary's byte-level string form.
fn toByteLevel(raw: []const u8, out: *mem.Vec(u8)) mem.Error!void {
    for (raw) |b| try uni.encode(byte_char[b], out);
}

pub fn load(merge_blob: []const u8, n_merges: u32, c: Config) mem.Error!void {
    cfg = c;
    initAlphabet();
    var key = mem.Vec(u8){};
    var b: u32 = 0;
    while (b < 256) : (b += 1) {
        key.len = 0;
        try uni.encode(byte_char[b], &key);
        byte_id[b] = if (st.vocab.get(key.items())) |id| id else -1;
    }
    merges = try sm.PairMap.init(n_merges);
    if (n_merges == 0) return;
    const offs = try sm.splitRecords(merge_blob, n_merges, '\n');
    var rank: u32 = 0;
    while (rank < n_merges) : (rank += 1) {
        const rec = merge_blob[offs[rank] .. offs[rank + 1] - 1];
        st.err_info = rank;
        var sp: usize = 0;
        while (sp < rec.len and rec[sp] != ' ') sp += 1;
        if (sp == 0 or sp + 1 >= rec.len) return error.BadInput;
        const left = st.vocab.get(rec[0..sp]) orelse return error.UnknownToken;
        const right = st.vocab.get(rec[sp + 1 ..]) orelse return error.UnknownToken;
        key.len = 0;
        try key.appendSlice(rec[0..sp]);
        try key.appendSlice(rec[sp + 1 ..]);
        const merged = st.vocab.get(key.items()) orelse return error.UnknownToken;
        merges.put(left, right, rank, merged);
    }
}

// ---- word cache: direct-mapped, short words only ------------------------------
// Real text repeats words constantly; caching their ids skips the merge loop.

const cache_slots = 16384;
const word_max = 24;
const ids_max = 12;
const Slot = struct { wlen: u8, nids: u8, word: [word_max]u8, ids: [ids_max]u32 };
var cache: []Slot = &.{};

pub fn initCache() mem.Error!void {
    cache = try mem.alloc(Slot, cache_slots);
    for (cache) |*s| s.wlen = 0;
}

fn cacheGet(word: []const u8, h: u32, out: *mem.Vec(u32)) mem.Error!bool {
    if (cache.len == 0 or word.len > word_max) return false;
    const s = &cache[h & (cache_slots - 1)];
    if (s.wlen != word.len or !sm.eql(s.word[0..word.len], word)) return false;
    try out.appendSlice(s.ids[0..s.nids]);
    return true;
}

fn cachePut(word: []const u8, h: u32, ids: []const u32) void {
    if (cache.len == 0 or word.len > word_max or ids.len > ids_max) return;
    const s = &cache[h & (cache_slots - 1)];
    s.wlen = @intCast(word.len);
    s.nids = @intCast(ids.len);
    @memcpy(s.word[0..word.len], word);
    @memcpy(s.ids[0..ids.len], ids);
}

// ---- merging ------------------------------------------------------------------

const dead: u32 = 0xFFFF_FFFF;
var sym = mem.Vec(u32){};
var nxt = mem.Vec(i32){};
var prv = mem.Vec(i32){};
var heap = mem.Vec(u64){};
var scratch = mem.Vec(u8){};

/// Called at the start of every request: the bump heap was reset under us.
pub fn resetScratch() void {
    sym = .{};
    nxt = .{};
    prv = .{};
    heap = .{};
    scratch = .{};
}

fn heapPush(key: u64) mem.Error!void {
    try heap.push(key);
    const h = heap.items();
    var i = h.len - 1;
    while (i > 0) {
        const parent = (i - 1) / 2;
        if (h[parent] <= h[i]) break;
        const tmp = h[parent];
        h[parent] = h[i];
        h[i] = tmp;
        i = parent;
    }
}

fn heapPop() u64 {
    const h = heap.items();
    const top = h[0];
    heap.len -= 1;
    if (heap.len == 0) return top;
    h[0] = h[heap.len];
    const n = heap.len;
    var i: usize = 0;
    while (true) {
        const l = 2 * i + 1;
        if (l >= n) break;
        var m = l;
        if (l + 1 < n and h[l + 1] < h[l]) m = l + 1;
        if (h[i] <= h[m]) break;
        const tmp = h[m];
        h[m] = h[i];
        h[i] = tmp;
        i = m;
    }
    return top;
}

/// Queue the pair starting at symbol `p` if it is a known merge.  The heap key
/// orders by (rank, position), the order the reference applies merges in.
fn queuePair(p: i32) mem.Error!void {
    if (p < 0) return;
    const q = nxt.ptr[@intCast(p)];
    if (q < 0) return;
    const v = merges.get(sym.ptr[@intCast(p)], sym.ptr[@intCast(q)]) orelse return;
    try heapPush((v & 0xFFFF_FFFF_0000_0000) | @as(u32, @intCast(p)));
}

fn mergeWord(word: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    sym.len = 0;
    heap.len = 0;
    for (word) |b| {
        const id = byte_id[b];
        if (id >= 0) {
            try sym.push(@intCast(id));
        } else if (cfg.unk_id >= 0) {
            try sym.push(@intCast(cfg.unk_id));
        }
    }
    const n = sym.len;
    if (n == 0) return;
    nxt.len = 0;
    prv.len = 0;
    try nxt.reserve(n);
    try prv.reserve(n);
    nxt.len = n;
    prv.len = n;
    var i: usize = 0;
    while (i < n) : (i += 1) {
        nxt.ptr[i] = if (i + 1 < n) @intCast(i + 1) else -1;
        prv.ptr[i] = @as(i32, @intCast(i)) - 1;
    }
    i = 0;
    while (i + 1 < n) : (i += 1) try queuePair(@intCast(i));

    while (heap.len > 0) {
        const key = heapPop();
        const p: usize = @intCast(key & 0xFFFF_FFFF);
        if (sym.ptr[p] == dead) continue;
        const q_signed = nxt.ptr[p];
        if (q_signed < 0) continue;
        const q: usize = @intCast(q_signed);
        // Entries go stale when a neighbour merged; ranks are unique per pair,
        // so an equal rank means the pair is still the one that was queued.
        const v = merges.get(sym.ptr[p], sym.ptr[q]) orelse continue;
        if ((v >> 32) != (key >> 32)) continue;
        sym.ptr[p] = @truncate(v);
        sym.ptr[q] = dead;
        const after = nxt.ptr[q];
        nxt.ptr[p] = after;
        if (after >= 0) prv.ptr[@intCast(after)] = @intCast(p);
        try queuePair(prv.ptr[p]);
        try queuePair(@intCast(p));
    }
    var k: i32 = 0;
    while (k >= 0) : (k = nxt.ptr[@intCast(k)]) try out.push(sym.ptr[@intCast(k)]);
}

fn encodeWord(word: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    if (word.len == 0) return;
    const h = sm.hashBytes(word);
    if (try cacheGet(word, h, out)) return;
    const start = out.len;
    var done = false;
    if (cfg.ignore_merges) {
        scratch.len = 0;
        try toByteLevel(word, &scratch);
        if (st.vocab.get(scratch.items())) |id| {
            try out.push(id);
            done = true;
        }
    }
    if (!done) try mergeWord(word, out);
    cachePut(word, h, out.items()[start..]);
}

// ---- pre-tokenization -----------------------------------------------------------

const Kind = enum { letter, number, space, other };

fn kindOf(c: u32) Kind {
    if (uni.isSpace(c)) return .space;
    if (uni.isLetter(c)) return .letter;
    if (uni.isNumber(c)) return .number;
    return .other;
}

fn runEnd(s: []const u8, start: usize, k: Kind) usize {
    var j = start;
    while (j < s.len) {
        const ch = uni.decode(s, j);
        if (kindOf(ch.cp) != k) break;
        j += ch.len;
    }
    return j;
}

/// End of the GPT-2 regex match starting at s[i]:
/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
fn scanWord(s: []const u8, i: usize) usize {
    if (s[i] == '\'' and i + 1 < s.len) {
        const c = s[i + 1];
        if (c == 's' or c == 't' or c == 'm' or c == 'd') return i + 2;
        if (i + 2 < s.len) {
            const d = s[i + 2];
            if ((c == 'r' and d == 'e') or (c == 'v' and d == 'e') or (c == 'l' and d == 'l')) return i + 3;
        }
    }
    const ch = uni.decode(s, i);
    if (ch.cp == ' ' and i + 1 < s.len) {
        const k2 = kindOf(uni.decode(s, i + 1).cp);
        if (k2 != .space) return runEnd(s, i + 1, k2);
    }
    const k = kindOf(ch.cp);
    if (k != .space) return runEnd(s, i, k);
    // Whitespace: take the run but leave its last char to prefix the next word
    // (the lookahead), unless the run ends the text or is a single char.
    var j = i;
    var last = i;
    while (j < s.len) {
        const c2 = uni.decode(s, j);
        if (kindOf(c2.cp) != .space) break;
        last = j;
        j += c2.len;
    }
    if (j == s.len or last == i) return j;
    return last;
}

fn encodePiece(piece_in: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    if (piece_in.len == 0) return;
    var piece = piece_in;
    if (cfg.add_prefix_space and piece[0] != ' ') {
        const buf = try mem.alloc(u8, piece.len + 1);
        buf[0] = ' ';
        @memcpy(buf[1..], piece);
        piece = buf;
    }
    if (!cfg.use_regex) return encodeWord(piece, out);
    var i: usize = 0;
    while (i < piece.len) {
        const j = scanWord(piece, i);
        try encodeWord(piece[i..j], out);
        i = j;
    }
}

/// Encode one stretch of text that contains no added token.
pub fn encodeText(text: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    if (cfg.digits == 0) return encodePiece(text, out);
    var i: usize = 0;
    var piece_start: usize = 0;
    while (i < text.len) {
        const ch = uni.decode(text, i);
        if (!uni.isNumber(ch.cp)) {
            i += ch.len;
            continue;
        }
        try encodePiece(text[piece_start..i], out);
        var j = i + ch.len;
        if (cfg.digits == 2) {
            while (j < text.len) {
                const c2 = uni.decode(text, j);
                if (!uni.isNumber(c2.cp)) break;
                j += c2.len;
            }
        }
        try encodePiece(text[i..j], out);
        i = j;
        piece_start = j;
    }
    try encodePiece(text[piece_start..], out);
}

/// Byte-level decoder: map each char back to its byte; a token containing a
/// char outside the alphabet (e.g. an added token) is emitted as-is.
pub fn decodeToken(tok: []const u8, out: *mem.Vec(u8)) mem.Error!void {
    try out.reserve(tok.len);
    const start = out.len;
    var i: usize = 0;
    while (i < tok.len) {
        const ch = uni.decode(tok, i);
        if (ch.cp >= char_byte.len or char_byte[ch.cp] < 0) {
            out.len = start;
            return out.appendSlice(tok);
        }
        try out.push(@intCast(char_byte[ch.cp]));
        i += ch.len;
    }
}
