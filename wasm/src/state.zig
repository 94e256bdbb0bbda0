// State shared by the tokenizer models: the vocabulary and the added tokens.
// One wasm instance holds exactly one tokenizer, loaded once, so plain globals
// are the simplest correct representation.

const mem = @import("mem.zig");
const sm = @import("strmap.zig");

pub const Model = enum(u32) { none = 0, bpe = 1, wordpiece = 2 };

pub var model: Model = .none;
pub var vocab: sm.StrMap = undefined;

/// Detail for the last error (e.g. index of a bad merge), read by the host.
pub var err_info: u32 = 0;

/// Added tokens are matched on the raw text before any model runs.
pub const Added = struct {
    ids: []u32 = &.{},
    special: []u8 = &.{},
    map: sm.StrMap = undefined,
    first_byte: [256]bool = @splat(false),
    count: u32 = 0,
};

pub var added: Added = .{};

/// Token string for `id`: added tokens first (as the reference does), then the
/// vocabulary.  Returns null for ids outside both.
pub fn tokenString(id: u32, special_out: *bool) ?[]const u8 {
    special_out.* = false;
    var i: u32 = 0;
    while (i < added.count) : (i += 1) {
        if (added.ids[i] == id) {
            special_out.* = added.special[i] != 0;
            return added.map.str(i);
        }
    }
    if (model == .none or id >= vocab.count()) return null;
    const s = vocab.str(id);
    if (s.len == 0) return null;
    return s;
}
