// Open-addressing hash tables that live on the bump heap.  Written by hand
// rather than with std's containers so the module depends on nothing but the
// language itself (std's allocator and map APIs change between Zig releases).

const mem = @import("mem.zig");

pub fn hashBytes(s: []const u8) u32 {
    var h: u32 = 2166136261;
    for (s) |b| {
        h ^= b;
        h *%= 16777619;
    }
    return h ^ (h >> 15);
}

fn tableSize(n: usize) usize {
    var size: usize = 16;
    while (size < n * 2) size *= 2;
    return size;
}

pub fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| {
        if (x != y) return false;
    }
    return true;
}

/// Token strings (by id) in one pool, with a lookup table string -> id.
/// Ids with an empty string are gaps in the vocabulary and are not indexed.
pub const StrMap = struct {
    pool: []const u8,
    offs: []const u32, // n + 1 entries, see splitRecords
    slots: []u32, // id + 1, 0 = empty
    mask: u32,

    pub fn init(pool: []const u8, offs: []const u32) mem.Error!StrMap {
        const n = offs.len - 1;
        const slots = try mem.alloc(u32, tableSize(n));
        @memset(slots, 0);
        var m = StrMap{ .pool = pool, .offs = offs, .slots = slots, .mask = @intCast(slots.len - 1) };
        var id: u32 = 0;
        while (id < n) : (id += 1) {
            const s = m.str(id);
            if (s.len == 0) continue;
            var i = hashBytes(s) & m.mask;
            while (m.slots[i] != 0) : (i = (i + 1) & m.mask) {
                if (eql(m.str(m.slots[i] - 1), s)) break;
            }
            if (m.slots[i] == 0) m.slots[i] = id + 1;
        }
        return m;
    }

    pub fn count(self: *const StrMap) u32 {
        return @intCast(self.offs.len - 1);
    }

    pub fn str(self: *const StrMap, id: u32) []const u8 {
        return self.pool[self.offs[id] .. self.offs[id + 1] - 1];
    }

    pub fn get(self: *const StrMap, key: []const u8) ?u32 {
        var i = hashBytes(key) & self.mask;
        while (self.slots[i] != 0) : (i = (i + 1) & self.mask) {
            const id = self.slots[i] - 1;
            if (eql(self.str(id), key)) return id;
        }
        return null;
    }
};

/// Split a blob of `n` records separated by `sep` into an offsets table.  Record
/// k spans offs[k] .. offs[k+1]-1: each record is followed by its separator
/// (the last one by a virtual one at the end of the blob).
pub fn splitRecords(blob: []const u8, n: u32, sep: u8) mem.Error![]u32 {
    const offs = try mem.alloc(u32, n + 1);
    var rec: u32 = 0;
    offs[0] = 0;
    for (blob, 0..) |b, i| {
        if (b != sep) continue;
        if (rec + 1 >= n) return error.BadInput;
        rec += 1;
        offs[rec] = @intCast(i + 1);
    }
    if (rec + 1 != n) return error.BadInput;
    offs[n] = @intCast(blob.len + 1);
    return offs;
}

/// (left id, right id) -> (rank, merged id).
pub const PairMap = struct {
    keys: []u64,
    vals: []u64,
    mask: u32,

    const empty: u64 = 0xFFFF_FFFF_FFFF_FFFF;

    pub fn init(n: usize) mem.Error!PairMap {
        const size = tableSize(n);
        const keys = try mem.alloc(u64, size);
        @memset(keys, empty);
        return .{ .keys = keys, .vals = try mem.alloc(u64, size), .mask = @intCast(size - 1) };
    }

    fn slot(key: u64) u32 {
        return @truncate((key *% 0x9E3779B97F4A7C15) >> 40);
    }

    /// A repeated pair keeps the later rank, as a hash map built from the merge
    /// list in order would.
    pub fn put(self: *PairMap, a: u32, b: u32, rank: u32, id: u32) void {
        const key = (@as(u64, a) << 32) | b;
        var i = slot(key) & self.mask;
        while (self.keys[i] != empty and self.keys[i] != key) : (i = (i + 1) & self.mask) {}
        self.keys[i] = key;
        self.vals[i] = (@as(u64, rank) << 32) | id;
    }

    pub fn get(self: *const PairMap, a: u32, b: u32) ?u64 {
        const key = (@as(u64, a) << 32) | b;
        var i = slot(key) & self.mask;
        while (self.keys[i] != empty) : (i = (i + 1) & self.mask) {
            if (self.keys[i] == key) return self.vals[i];
        }
        return null;
    }
};
