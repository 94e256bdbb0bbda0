// Tokenizer module entry points (wasm32-freestanding, no imports).
//
// Protocol with the host: load once (vocab, added tokens, model, template),
// then `finish_load` freezes that memory.  Each request calls
// `begin_request`, writes its inputs into buffers from `mem_alloc`, makes ONE
// call (`encode` for a whole batch, or `decode`), and reads `result_ptr`.
// Functions return 0 or a negative error code; nothing traps on bad input.

const mem = @import("mem.zig");
const sm = @import("strmap.zig");
const st = @import("state.zig");
const bpe = @import("bpe.zig");
const wp = @import("wordpiece.zig");
const tables = @import("unicode_tables.zig");
const uni = @import("uni.zig");

const E_OOM: i32 = -1;
const E_BAD_INPUT: i32 = -2;
const E_UNKNOWN_TOKEN: i32 = -3;
const E_NOT_LOADED: i32 = -4;
const E_BAD_UTF8: i32 = -5;

fn code(e: mem.Error) i32 {
    return switch (e) {
        error.OutOfMemory => E_OOM,
        error.BadInput => E_BAD_INPUT,
        error.UnknownToken => E_UNKNOWN_TOKEN,
        error.NotLoaded => E_NOT_LOADED,
        error.BadUtf8 => E_BAD_UTF8,
    };
}

fn bytesAt(ptr: u32, len: u32) []const u8 {
    const p: [*]const u8 = @ptrFromInt(ptr);
    return p[0..len];
}

fn wordsAt(ptr: u32, len: u32) []const u32 {
    if (len == 0) return &.{};
    const p: [*]const u32 = @ptrFromInt(ptr);
    return p[0..len];
}

var result: [8]u32 = @splat(0);

export fn result_ptr() u32 {
    return @intFromPtr(&result);
}

export fn err_info() u32 {
    return st.err_info;
}

export fn unicode_version_ptr() u32 {
    result[0] = @intFromPtr(tables.unicode_version.ptr);
    result[1] = tables.unicode_version.len;
    return @intFromPtr(&result);
}

/// Returns 0 when the memory cap is hit (the host reports it).
export fn mem_alloc(n: u32) u32 {
    const block = mem.alloc(u8, n) catch return 0;
    return @intFromPtr(block.ptr);
}

// ---- loading ---------------------------------------------------------------------

/// Vocabulary: `n` token strings in id order, NUL-separated (gaps are empty).
export fn load_vocab(ptr: u32, len: u32, n: u32) i32 {
    const blob = bytesAt(ptr, len);
    const offs = sm.splitRecords(blob, n, 0) catch |e| return code(e);
    st.vocab = sm.StrMap.init(blob, offs) catch |e| return code(e);
    return 0;
}

/// Added tokens: contents NUL-separated; meta holds n ids then n special flags.
export fn load_added(ptr: u32, len: u32, n: u32, meta: u32) i32 {
    if (n == 0) return 0;
    const blob = bytesAt(ptr, len);
    const offs = sm.splitRecords(blob, n, 0) catch |e| return code(e);
    const m = wordsAt(meta, 2 * n);
    const ids = mem.alloc(u32, n) catch |e| return code(e);
    const special = mem.alloc(u8, n) catch |e| return code(e);
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        ids[i] = m[i];
        special[i] = @intCast(m[n + i] & 1);
    }
    st.added.ids = ids;
    st.added.special = special;
    st.added.map = sm.StrMap.init(blob, offs) catch |e| return code(e);
    st.added.count = n;
    i = 0;
    while (i < n) : (i += 1) {
        const s = st.added.map.str(i);
        if (s.len == 0) return E_BAD_INPUT;
        st.added.first_byte[s[0]] = true;
    }
    return 0;
}

export fn load_bpe(ptr: u32, len: u32, n_merges: u32, flags: u32, digits: u32, unk_id: i32) i32 {
    const c = bpe.Config{
        .add_prefix_space = flags & 1 != 0,
        .use_regex = flags & 2 != 0,
        .ignore_merges = flags & 4 != 0,
        .digits = digits,
        .unk_id = unk_id,
    };
    bpe.load(bytesAt(ptr, len), n_merges, c) catch |e| return code(e);
    bpe.initCache() catch |e| return code(e);
    st.model = .bpe;
    return 0;
}

export fn load_wordpiece(prefix_ptr: u32, prefix_len: u32, unk_id: u32, max_chars: u32, flags: u32) i32 {
    wp.load(bytesAt(prefix_ptr, prefix_len), .{
        .clean_text = flags & 1 != 0,
        .handle_chinese = flags & 2 != 0,
        .strip_accents = flags & 4 != 0,
        .lowercase = flags & 8 != 0,
        .cleanup = flags & 16 != 0,
        .unk_id = unk_id,
        .max_chars = max_chars,
    });
    st.model = .wordpiece;
    return 0;
}

// Post-processor template for one sequence: prefix tokens, the sequence, suffix.
var pre_ids: []const u32 = &.{};
var pre_types: []const u32 = &.{};
var suf_ids: []const u32 = &.{};
var suf_types: []const u32 = &.{};
var seq_type: u32 = 0;

/// Layout: [n_pre, n_suf, seq_type, pre ids, pre types, suf ids, suf types].
export fn set_template(ptr: u32, len: u32) i32 {
    const w = wordsAt(ptr, len);
    if (w.len < 3) return E_BAD_INPUT;
    const np = w[0];
    const ns = w[1];
    if (w.len != 3 + 2 * np + 2 * ns) return E_BAD_INPUT;
    seq_type = w[2];
    pre_ids = w[3 .. 3 + np];
    pre_types = w[3 + np .. 3 + 2 * np];
    suf_ids = w[3 + 2 * np .. 3 + 2 * np + ns];
    suf_types = w[3 + 2 * np + ns ..];
    return 0;
}

export fn finish_load() void {
    mem.setMark();
}

/// End of the loaded state: memory [0, mem_top) is everything a snapshot needs.
export fn mem_top() u32 {
    return @intCast(mem.markAddress());
}

export fn begin_request() void {
    mem.reset();
    bpe.resetScratch();
    wp.resetScratch();
}

// ---- encoding ----------------------------------------------------------------------

fn encodeModel(text: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    switch (st.model) {
        .bpe => try bpe.encodeText(text, out),
        .wordpiece => try wp.encodeText(text, out),
        .none => return error.NotLoaded,
    }
}

/// Split out added tokens (leftmost-longest match on the raw text) and let the
/// model encode the stretches between them.
fn encodeOne(text: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    var seg: usize = 0;
    var i: usize = 0;
    while (i < text.len) {
        if (st.added.first_byte[text[i]]) {
            var best_len: usize = 0;
            var best: u32 = 0;
            var k: u32 = 0;
            while (k < st.added.count) : (k += 1) {
                const s = st.added.map.str(k);
                if (s.len > best_len and i + s.len <= text.len and sm.eql(text[i .. i + s.len], s)) {
                    best_len = s.len;
                    best = k;
                }
            }
            if (best_len > 0) {
                try encodeModel(text[seg..i], out);
                try out.push(st.added.ids[best]);
                i += best_len;
                seg = i;
                continue;
            }
        }
        i += 1;
    }
    try encodeModel(text[seg..], out);
}

const Opts = struct {
    add_special: bool,
    trunc_max: u32,
    trunc_left: bool,
    pad_mode: u32, // 0 none, 1 longest in batch, 2 fixed
    pad_len: u32,
    pad_multiple: u32,
    pad_left: bool,
    pad_id: u32,
    pad_type: u32,
};

fn encodeBatch(text: []const u8, offs: []const u32, n: u32, o: Opts) mem.Error!void {
    var raw = mem.Vec(u32){};
    const raw_offs = try mem.alloc(u32, n + 1);
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        if (offs[i] > offs[i + 1] or offs[i + 1] > text.len) return error.BadInput;
        const t = text[offs[i]..offs[i + 1]];
        const valid = uni.validUtf8Prefix(t);
        if (valid != t.len) {
            // Rejected as a whole: the host learns which text and which byte.
            st.err_info = i;
            result[0] = @intCast(valid);
            return error.BadUtf8;
        }
        raw_offs[i] = @intCast(raw.len);
        try encodeOne(text[offs[i]..offs[i + 1]], &raw);
    }
    raw_offs[n] = @intCast(raw.len);

    const n_special: u32 = if (o.add_special) @intCast(pre_ids.len + suf_ids.len) else 0;
    var limit: u32 = 0xFFFF_FFFF;
    if (o.trunc_max > 0) {
        if (o.trunc_max < n_special) return error.BadInput;
        limit = o.trunc_max - n_special;
    }
    var width: u32 = 0;
    i = 0;
    while (i < n) : (i += 1) {
        const len = @min(raw_offs[i + 1] - raw_offs[i], limit) + n_special;
        if (len > width) width = len;
    }
    if (o.pad_mode == 2) width = o.pad_len;
    if (o.pad_multiple > 0 and width % o.pad_multiple != 0) width += o.pad_multiple - width % o.pad_multiple;

    const out_offs = try mem.alloc(u32, n + 1);
    var total: u32 = 0;
    i = 0;
    while (i < n) : (i += 1) {
        out_offs[i] = total;
        const len = @min(raw_offs[i + 1] - raw_offs[i], limit) + n_special;
        total += if (o.pad_mode != 0 and len < width) width else len;
    }
    out_offs[n] = total;
    const ids = try mem.alloc(u32, total);
    const types = try mem.alloc(u32, total);
    const mask = try mem.alloc(u32, total);

    i = 0;
    while (i < n) : (i += 1) {
        var seq = raw.items()[raw_offs[i]..raw_offs[i + 1]];
        if (seq.len > limit) seq = if (o.trunc_left) seq[seq.len - limit ..] else seq[0..limit];
        const len: u32 = @as(u32, @intCast(seq.len)) + n_special;
        const slot = out_offs[i + 1] - out_offs[i];
        const pad = slot - len;
        var p = out_offs[i] + (if (o.pad_left) pad else 0);
        if (o.add_special) {
            for (pre_ids, pre_types) |id, ty| {
                ids[p] = id;
                types[p] = ty;
                p += 1;
            }
        }
        for (seq) |id| {
            ids[p] = id;
            types[p] = seq_type;
            p += 1;
        }
        if (o.add_special) {
            for (suf_ids, suf_types) |id, ty| {
                ids[p] = id;
                types[p] = ty;
                p += 1;
            }
        }
        const real_start = out_offs[i] + (if (o.pad_left) pad else 0);
        @memset(mask[real_start .. real_start + len], 1);
        const pad_start = if (o.pad_left) out_offs[i] else out_offs[i] + len;
        @memset(ids[pad_start .. pad_start + pad], o.pad_id);
        @memset(types[pad_start .. pad_start + pad], o.pad_type);
        @memset(mask[pad_start .. pad_start + pad], 0);
    }
    result = .{ n, total, @intFromPtr(ids.ptr), @intFromPtr(types.ptr), @intFromPtr(mask.ptr), @intFromPtr(out_offs.ptr), 0, 0 };
}

/// opts: [add_special, trunc_max, trunc_left, pad_mode, pad_len, pad_multiple,
/// pad_left, pad_id, pad_type]
export fn encode(text_ptr: u32, text_len: u32, offs_ptr: u32, n: u32, opts_ptr: u32) i32 {
    if (st.model == .none) return E_NOT_LOADED;
    const w = wordsAt(opts_ptr, 9);
    const o = Opts{
        .add_special = w[0] != 0,
        .trunc_max = w[1],
        .trunc_left = w[2] != 0,
        .pad_mode = w[3],
        .pad_len = w[4],
        .pad_multiple = w[5],
        .pad_left = w[6] != 0,
        .pad_id = w[7],
        .pad_type = w[8],
    };
    encodeBatch(bytesAt(text_ptr, text_len), wordsAt(offs_ptr, n + 1), n, o) catch |e| return code(e);
    return 0;
}

// ---- decoding ----------------------------------------------------------------------

/// Decode a batch: ids with n + 1 offsets; result = bytes + n + 1 byte offsets.
export fn decode(ids_ptr: u32, offs_ptr: u32, n: u32, skip_special: u32) i32 {
    if (st.model == .none) return E_NOT_LOADED;
    const offs = wordsAt(offs_ptr, n + 1);
    const ids = wordsAt(ids_ptr, if (n == 0) 0 else offs[n]);
    var out = mem.Vec(u8){};
    const out_offs = mem.alloc(u32, n + 1) catch |e| return code(e);
    var s: u32 = 0;
    while (s < n) : (s += 1) {
        out_offs[s] = @intCast(out.len);
        if (offs[s] > offs[s + 1] or offs[s + 1] > ids.len) return E_BAD_INPUT;
        var kept: u32 = 0;
        for (ids[offs[s]..offs[s + 1]]) |id| {
            var special = false;
            // Unknown ids are dropped, as the reference does.
            const t = st.tokenString(id, &special) orelse continue;
            if (special and skip_special != 0) continue;
            const r = switch (st.model) {
                .bpe => bpe.decodeToken(t, &out),
                .wordpiece => wp.decodeToken(t, kept, &out),
                .none => unreachable,
            };
            r catch |e| return code(e);
            kept += 1;
        }
    }
    out_offs[n] = @intCast(out.len);
    result = .{ n, @intCast(out.len), if (out.len > 0) @intFromPtr(out.ptr) else 0, @intFromPtr(out_offs.ptr), 0, 0, 0, 0 };
    return 0;
}
