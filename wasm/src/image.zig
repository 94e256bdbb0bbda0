// Image preprocessing: bilinear resize + crop + normalise + HWC uint8 -> CHW f32,
// optionally to grayscale.  Pure arithmetic; no imports.
//
// Bilinear convention (documented in wasm/README.md): half-pixel centres,
// src = (dst + 0.5) * in / out - 0.5, clamped to [0, in - 1]; no antialiasing.
// Coordinates and weights are computed in f64 so large images do not lose
// sub-pixel precision; the output is rounded to f32 once.

extern var __heap_base: u8;

var top: usize = 0;

/// One request at a time: the host calls `reset` and then allocates the source
/// and destination buffers.  Returns 0 when the memory cap is reached.
export fn reset() void {
    top = @intFromPtr(&__heap_base);
}

export fn mem_alloc(n: u32) u32 {
    if (top == 0) reset();
    const start: u64 = (@as(u64, top) + 15) & ~@as(u64, 15);
    const end: u64 = start + n;
    if (end >= 0xFFFF_0000) return 0;
    const have: u64 = @as(u64, @wasmMemorySize(0)) * 65536;
    if (end > have) {
        const pages: usize = @intCast((end - have + 65535) / 65536);
        if (@wasmMemoryGrow(0, pages) < 0) return 0;
    }
    top = @intCast(end);
    return @intCast(start);
}

const Axis = struct { lo: u32, hi: u32, w: f64 };

fn axis(dst: u32, offset: u32, in_size: u32, out_size: u32) Axis {
    const scale = @as(f64, @floatFromInt(in_size)) / @as(f64, @floatFromInt(out_size));
    var s = (@as(f64, @floatFromInt(dst + offset)) + 0.5) * scale - 0.5;
    const max: f64 = @floatFromInt(in_size - 1);
    if (s < 0) s = 0;
    if (s > max) s = max;
    const lo: u32 = @intFromFloat(@floor(s));
    const hi: u32 = if (lo + 1 < in_size) lo + 1 else lo;
    return .{ .lo = lo, .hi = hi, .w = s - @as(f64, @floatFromInt(lo)) };
}

/// params (f32 x 8): scale, mean[3], std[3], unused.
/// src: h x w x c uint8 (c = 1 or 3).  The image is conceptually resized to
/// rh x rw, and the window [top, top+oh) x [left, left+ow) of it is written to
/// out as out_c planes of oh x ow f32 (out_c = 3, or 1 for grayscale).
/// Returns 0, or -2 for inconsistent arguments.
export fn preprocess(src_ptr: u32, h: u32, w: u32, c: u32, rh: u32, rw: u32, crop_top: u32, crop_left: u32, oh: u32, ow: u32, params_ptr: u32, gray: u32, out_ptr: u32) i32 {
    if (h == 0 or w == 0 or rh == 0 or rw == 0 or oh == 0 or ow == 0) return -2;
    if (c != 1 and c != 3) return -2;
    if (crop_top + oh > rh or crop_left + ow > rw) return -2;
    const src: [*]const u8 = @ptrFromInt(src_ptr);
    const params: [*]const f32 = @ptrFromInt(params_ptr);
    const out: [*]f32 = @ptrFromInt(out_ptr);
    const scale: f64 = params[0];
    const out_c: u32 = if (gray != 0) 1 else 3;
    const plane = oh * ow;
    const row_stride = w * c;

    var y: u32 = 0;
    while (y < oh) : (y += 1) {
        const ay = axis(y, crop_top, h, rh);
        var x: u32 = 0;
        while (x < ow) : (x += 1) {
            const ax = axis(x, crop_left, w, rw);
            var rgb: [3]f64 = undefined;
            var ch: u32 = 0;
            while (ch < c) : (ch += 1) {
                const p00: f64 = @floatFromInt(src[ay.lo * row_stride + ax.lo * c + ch]);
                const p01: f64 = @floatFromInt(src[ay.lo * row_stride + ax.hi * c + ch]);
                const p10: f64 = @floatFromInt(src[ay.hi * row_stride + ax.lo * c + ch]);
                const p11: f64 = @floatFromInt(src[ay.hi * row_stride + ax.hi * c + ch]);
                const top_row = p00 + (p01 - p00) * ax.w;
                const bottom_row = p10 + (p11 - p10) * ax.w;
                rgb[ch] = top_row + (bottom_row - top_row) * ay.w;
            }
            if (c == 1) {
                rgb[1] = rgb[0];
                rgb[2] = rgb[0];
            }
            const idx = y * ow + x;
            if (gray != 0) {
                const luma = if (c == 1) rgb[0] else 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                out[idx] = @floatCast((luma * scale - params[1]) / params[4]);
            } else {
                var k: u32 = 0;
                while (k < out_c) : (k += 1) {
                    const v = (rgb[k] * scale - params[1 + k]) / params[4 + k];
                    out[k * plane + idx] = @floatCast(v);
                }
            }
        }
    }
    return 0;
}

// ---- PIL-compatible resampling ---------------------------------------------------
//
// The native image-classify path resizes with Pillow's BILINEAR filter on
// uint8 pixels, which is a triangle filter whose support grows with the
// downscale factor (so it antialiases), applied separably: a horizontal pass
// rounded to uint8, then a vertical pass rounded to uint8, with weights in
// 22-bit fixed point.  Reproducing those steps (not a float approximation)
// makes the result bit-identical to Pillow, so normalised values agree to
// f32 rounding and the classifier sees the same input as the native path.

const PRECISION_BITS = 22;

/// Fixed-point weights for output positions [start, start + n) of an
/// in_size -> out_size resize: position i reads `count[i]` source pixels from
/// `first[i]`, weighted by weights[i * ksize ..].
const Coeffs = struct { first: [*]u32, count: [*]u32, weights: [*]i32, ksize: u32 };

fn triangle(x: f64) f64 {
    const a = @abs(x);
    return if (a < 1.0) 1.0 - a else 0.0;
}

fn allocAs(comptime T: type, n: u32) ?[*]T {
    const p = mem_alloc(n * @sizeOf(T));
    if (p == 0) return null;
    return @ptrFromInt(p);
}

fn coeffs(in_size: u32, out_size: u32, start: u32, n: u32) ?Coeffs {
    const scale = @as(f64, @floatFromInt(in_size)) / @as(f64, @floatFromInt(out_size));
    // Downscaling widens the filter by the scale factor; upscaling keeps support 1.
    const filterscale = @max(scale, 1.0);
    const support = filterscale;
    const ss = 1.0 / filterscale; // a multiply by the reciprocal, as Pillow does: bit-exact weights
    const ksize: u32 = @as(u32, @intFromFloat(@ceil(support))) * 2 + 1;
    const first = allocAs(u32, n) orelse return null;
    const count = allocAs(u32, n) orelse return null;
    const weights = allocAs(i32, n * ksize) orelse return null;
    const tmp = allocAs(f64, ksize) orelse return null;
    const in_f: f64 = @floatFromInt(in_size);
    var i: u32 = 0;
    while (i < n) : (i += 1) {
        const center = (@as(f64, @floatFromInt(start + i)) + 0.5) * scale;
        // Truncation toward zero, then clamping, as Pillow computes the window.
        const lo_f = @max(@trunc(center - support + 0.5), 0.0);
        const hi_f = @min(@trunc(center + support + 0.5), in_f);
        const lo: u32 = @intFromFloat(lo_f);
        var cnt: u32 = if (hi_f > lo_f) @intFromFloat(hi_f - lo_f) else 0;
        if (cnt > ksize) cnt = ksize;
        var total: f64 = 0;
        var k: u32 = 0;
        while (k < cnt) : (k += 1) {
            const wgt = triangle((@as(f64, @floatFromInt(lo + k)) - center + 0.5) * ss);
            tmp[k] = wgt;
            total += wgt;
        }
        k = 0;
        while (k < cnt) : (k += 1) {
            const norm = if (total != 0) tmp[k] / total else tmp[k];
            const fixed = norm * @as(f64, 1 << PRECISION_BITS);
            weights[i * ksize + k] = @intFromFloat(if (fixed < 0) @trunc(fixed - 0.5) else @trunc(fixed + 0.5));
        }
        first[i] = lo;
        count[i] = cnt;
    }
    return .{ .first = first, .count = count, .weights = weights, .ksize = ksize };
}

/// Weighted sum of `n` samples `stride` apart, rounded and clamped to uint8.
inline fn filter8(src: [*]const u8, stride: u32, w: [*]const i32, n: u32) u8 {
    var acc: i64 = 1 << (PRECISION_BITS - 1);
    var k: u32 = 0;
    while (k < n) : (k += 1) acc += @as(i64, src[k * stride]) * w[k];
    const v = acc >> PRECISION_BITS;
    return if (v < 0) 0 else if (v > 255) 255 else @intCast(v);
}

/// Same arguments and output as `preprocess`, resampling as Pillow's BILINEAR.
/// Only the crop window is computed.  Returns 0, -1 (out of memory) or -2.
export fn preprocess_pil(src_ptr: u32, h: u32, w: u32, c: u32, rh: u32, rw: u32, crop_top: u32, crop_left: u32, oh: u32, ow: u32, params_ptr: u32, gray: u32, out_ptr: u32) i32 {
    if (h == 0 or w == 0 or rh == 0 or rw == 0 or oh == 0 or ow == 0) return -2;
    if (c != 1 and c != 3) return -2;
    if (crop_top + oh > rh or crop_left + ow > rw) return -2;
    const src: [*]const u8 = @ptrFromInt(src_ptr);
    const row = w * c;

    // Source rows the vertical pass reads (Pillow skips a pass whose size is unchanged).
    const need_v = rh != h;
    const vc: ?Coeffs = if (need_v) (coeffs(h, rh, crop_top, oh) orelse return -1) else null;
    const y0: u32 = if (vc) |v| v.first[0] else crop_top;
    const y1: u32 = if (vc) |v| v.first[oh - 1] + v.count[oh - 1] else crop_top + oh;

    // Horizontal pass into rows [y0, y1) x crop columns, uint8 like Pillow's temporary image.
    const tw = ow * c;
    const tmp = allocAs(u8, (y1 - y0) * tw) orelse return -1;
    if (rw != w) {
        const hc = coeffs(w, rw, crop_left, ow) orelse return -1;
        var y = y0;
        while (y < y1) : (y += 1) {
            var x: u32 = 0;
            while (x < ow) : (x += 1) {
                const base = src + y * row + hc.first[x] * c;
                const wts = hc.weights + x * hc.ksize;
                var ch: u32 = 0;
                while (ch < c) : (ch += 1) {
                    tmp[(y - y0) * tw + x * c + ch] = filter8(base + ch, c, wts, hc.count[x]);
                }
            }
        }
    } else {
        var y = y0;
        while (y < y1) : (y += 1) {
            @memcpy(tmp[(y - y0) * tw ..][0..tw], src[y * row + crop_left * c ..][0..tw]);
        }
    }

    // Vertical pass, then normalise straight into the CHW output.
    const params: [*]const f32 = @ptrFromInt(params_ptr);
    const out: [*]f32 = @ptrFromInt(out_ptr);
    const scale: f64 = params[0];
    const plane = oh * ow;
    var y: u32 = 0;
    while (y < oh) : (y += 1) {
        var x: u32 = 0;
        while (x < ow) : (x += 1) {
            var px: [3]f64 = undefined;
            var ch: u32 = 0;
            while (ch < c) : (ch += 1) {
                const col = tmp + x * c + ch;
                const v: u8 = if (vc) |v|
                    filter8(col + (v.first[y] - y0) * tw, tw, v.weights + y * v.ksize, v.count[y])
                else
                    col[(crop_top + y - y0) * tw];
                px[ch] = @floatFromInt(v);
            }
            if (c == 1) {
                px[1] = px[0];
                px[2] = px[0];
            }
            const idx = y * ow + x;
            if (gray != 0) {
                const luma = if (c == 1) px[0] else 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
                out[idx] = @floatCast((luma * scale - params[1]) / params[4]);
            } else {
                var k: u32 = 0;
                while (k < 3) : (k += 1) {
                    out[k * plane + idx] = @floatCast((px[k] * scale - params[1 + k]) / params[4 + k]);
                }
            }
        }
    }
    return 0;
}
