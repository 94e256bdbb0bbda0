// BERT WordPiece: BertNormalizer (clean text, CJK spacing, NFD accent
// stripping, lowercasing), BertPreTokenizer (whitespace + punctuation split)
// and greedy longest-match-first subwords with a continuation prefix.

const mem = @import("mem.zig");
const uni = @import("uni.zig");
const sm = @import("strmap.zig");
const st = @import("state.zig");

pub const Config = struct {
    clean_text: bool = true,
    handle_chinese: bool = true,
    strip_accents: bool = true,
    lowercase: bool = true,
    unk_id: u32 = 0,
    max_chars: u32 = 100,
    cleanup: bool = true,
};

var cfg: Config = .{};
var prefix: []const u8 = &.{};

var cps = mem.Vec(u32){};
var norm = mem.Vec(u32){};
var word = mem.Vec(u8){};
var bounds = mem.Vec(u32){};
var key = mem.Vec(u8){};
var tok = mem.Vec(u8){};
var tok2 = mem.Vec(u8){};

pub fn load(pfx: []const u8, c: Config) void {
    prefix = pfx;
    cfg = c;
}

pub fn resetScratch() void {
    cps = .{};
    norm = .{};
    word = .{};
    bounds = .{};
    key = .{};
    tok = .{};
    tok2 = .{};
}

fn normalize(text: []const u8) mem.Error!void {
    cps.len = 0;
    var i: usize = 0;
    while (i < text.len) {
        const ch = uni.decode(text, i);
        i += ch.len;
        var c = ch.cp;
        if (cfg.clean_text) {
            const keep_ws = c == '\t' or c == '\n' or c == '\r';
            if (c == 0 or c == 0xFFFD or (!keep_ws and uni.isOther(c))) continue;
            if (keep_ws or uni.isSpace(c)) c = ' ';
        }
        const cjk = cfg.handle_chinese and uni.isCjk(c);
        if (cjk) try cps.push(' ');
        if (cfg.strip_accents) {
            try uni.decompose(c, &cps);
        } else {
            try cps.push(c);
        }
        if (cjk) try cps.push(' ');
    }
    if (cfg.strip_accents) uni.canonicalOrder(cps.items());
    norm.len = 0;
    try norm.reserve(cps.len);
    for (cps.items()) |c| {
        if (cfg.strip_accents and uni.isNonspacingMark(c)) continue;
        if (cfg.lowercase) {
            try uni.lowercase(c, &norm);
        } else {
            try norm.push(c);
        }
    }
}

fn wordPiece(w: []const u32, out: *mem.Vec(u32)) mem.Error!void {
    if (w.len > cfg.max_chars) return out.push(cfg.unk_id);
    word.len = 0;
    bounds.len = 0;
    for (w) |c| {
        try bounds.push(@intCast(word.len));
        try uni.encode(c, &word);
    }
    try bounds.push(@intCast(word.len));
    const bytes = word.items();
    const first_out = out.len;
    var start: usize = 0;
    while (start < w.len) {
        var end = w.len;
        var found: ?u32 = null;
        while (end > start) : (end -= 1) {
            const piece = bytes[bounds.ptr[start]..bounds.ptr[end]];
            if (start == 0) {
                found = st.vocab.get(piece);
            } else {
                key.len = 0;
                try key.appendSlice(prefix);
                try key.appendSlice(piece);
                found = st.vocab.get(key.items());
            }
            if (found != null) break;
        }
        // No piece matches: the whole word becomes [UNK], as in BERT.
        const id = found orelse {
            out.len = first_out;
            return out.push(cfg.unk_id);
        };
        try out.push(id);
        start = end;
    }
}

/// Encode one stretch of text that contains no added token.
pub fn encodeText(text: []const u8, out: *mem.Vec(u32)) mem.Error!void {
    try normalize(text);
    const cs = norm.items();
    var i: usize = 0;
    var start: usize = 0;
    while (i < cs.len) : (i += 1) {
        const c = cs[i];
        const space = uni.isSpace(c);
        if (!space and !uni.isBertPunct(c)) continue;
        if (i > start) try wordPiece(cs[start..i], out);
        if (!space) try wordPiece(cs[i .. i + 1], out);
        start = i + 1;
    }
    if (cs.len > start) try wordPiece(cs[start..], out);
}

fn startsWith(s: []const u8, p: []const u8) bool {
    return s.len >= p.len and sm.eql(s[0..p.len], p);
}

/// Replace every `pat` in tok with `rep` (tok <- result).
fn replaceAll(pat: []const u8, rep: []const u8) mem.Error!void {
    const s = tok.items();
    if (s.len < pat.len) return;
    tok2.len = 0;
    var i: usize = 0;
    var changed = false;
    while (i < s.len) {
        if (startsWith(s[i..], pat)) {
            try tok2.appendSlice(rep);
            i += pat.len;
            changed = true;
        } else {
            try tok2.push(s[i]);
            i += 1;
        }
    }
    if (!changed) return;
    const swap = tok;
    tok = tok2;
    tok2 = swap;
}

const cleanup_rules = [_][2][]const u8{
    .{ " .", "." },         .{ " ?", "?" },     .{ " !", "!" },     .{ " ,", "," },
    .{ " ' ", "'" },        .{ " n't", "n't" }, .{ " 'm", "'m" },   .{ " do not", " don't" },
    .{ " 's", "'s" },       .{ " 've", "'ve" }, .{ " 're", "'re" },
};

/// WordPiece decoder, applied token by token like the reference: glue "##"
/// continuations, separate other tokens by a space, then the cleanup rules.
pub fn decodeToken(t: []const u8, index: u32, out: *mem.Vec(u8)) mem.Error!void {
    tok.len = 0;
    if (index != 0) {
        if (startsWith(t, prefix)) {
            try tok.appendSlice(t[prefix.len..]);
        } else {
            try tok.push(' ');
            try tok.appendSlice(t);
        }
    } else {
        try tok.appendSlice(t);
    }
    if (cfg.cleanup) {
        for (cleanup_rules) |r| try replaceAll(r[0], r[1]);
    }
    try out.appendSlice(tok.items());
}
