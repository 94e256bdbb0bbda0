// Bump allocator over wasm linear memory.
//
// Everything a tokenizer loads lives below `mark`; every request allocates above
// it and `reset()` drops the whole request at once.  That makes a failed or
// aborted request unable to leak memory into the next one, and keeps the module
// free of any allocator state that could be corrupted.  Growth goes through
// `memory.grow`, which the host caps (wasmtime store limits): hitting the cap
// surfaces as error.OutOfMemory instead of a trap.

pub const Error = error{ OutOfMemory, BadInput, UnknownToken, NotLoaded, BadUtf8 };

extern var __heap_base: u8;

var top: usize = 0;
var mark: usize = 0;

fn heapStart() usize {
    return @intFromPtr(&__heap_base);
}

fn ensure(end: usize) Error!void {
    const have: usize = @wasmMemorySize(0) * 65536;
    if (end <= have) return;
    const pages = (end - have + 65535) / 65536;
    if (@wasmMemoryGrow(0, pages) < 0) return error.OutOfMemory;
}

pub fn alloc(comptime T: type, n: usize) Error![]T {
    if (top == 0) top = heapStart();
    const a: usize = if (@alignOf(T) < 8) 8 else @alignOf(T);
    const start: u64 = (@as(u64, top) + a - 1) & ~@as(u64, a - 1);
    const end: u64 = start + @as(u64, n) * @sizeOf(T);
    // wasm32 addresses stop at 4 GiB; anything past that is simply too big.
    if (end >= 0xFFFF_0000) return error.OutOfMemory;
    try ensure(@intCast(end));
    top = @intCast(end);
    const p: [*]T = @ptrFromInt(@as(usize, @intCast(start)));
    return p[0..n];
}

/// Freeze everything allocated so far (the loaded tokenizer).
pub fn setMark() void {
    if (top == 0) top = heapStart();
    mark = top;
}

pub fn markAddress() usize {
    if (mark == 0) setMark();
    return mark;
}

/// Drop all per-request allocations.
pub fn reset() void {
    if (mark == 0) setMark();
    top = mark;
}

/// Growable array on the bump heap.  Growth copies and abandons the old block;
/// with doubling the waste is bounded by the final size and is reclaimed by
/// the next `reset()`.
pub fn Vec(comptime T: type) type {
    return struct {
        ptr: [*]T = undefined,
        cap: usize = 0,
        len: usize = 0,

        const Self = @This();

        pub fn reserve(self: *Self, extra: usize) Error!void {
            const need = self.len + extra;
            if (need <= self.cap) return;
            var cap: usize = if (self.cap < 16) 16 else self.cap * 2;
            if (cap < need) cap = need;
            const block = try alloc(T, cap);
            if (self.len > 0) @memcpy(block[0..self.len], self.ptr[0..self.len]);
            self.ptr = block.ptr;
            self.cap = cap;
        }

        pub fn push(self: *Self, x: T) Error!void {
            if (self.len == self.cap) try self.reserve(1);
            self.ptr[self.len] = x;
            self.len += 1;
        }

        pub fn appendSlice(self: *Self, xs: []const T) Error!void {
            if (xs.len == 0) return;
            try self.reserve(xs.len);
            @memcpy(self.ptr[self.len .. self.len + xs.len], xs);
            self.len += xs.len;
        }

        pub fn items(self: *const Self) []T {
            return self.ptr[0..self.len];
        }
    };
}
