// scratch v1
struct Params {
    n: u32,
    k: u32,
    m: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

override W_F16: bool = false;

const TM: u32 = 8u;
const TN: u32 = 2u;

fn load_w(i: u32) -> f32 {
    if W_F16 {
        let pair = unpack2x16float(wt[i >> 1u]);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(wt[i]);
}

fn load_b(i: u32) -> f32 {
    if W_F16 {
        let pair = unpack2x16float(bias[i >> 1u]);
        return select(pair.x, pair.y, (i & 1u) == 1u);
    }
    return bitcast<f32>(bias[i]);
}

@compute @workgroup_size(64)
fn linear_a(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    let col_blocks = (p.m + 64u * TN - 1u) / (64u * TN);
    let r0 = (flat / col_blocks) * TM;
    if r0 >= p.n {
        return;
    }
    let cb = (flat % col_blocks) * 64u * TN + li;
    var wrow: array<u32, TN>;
    for (var j = 0u; j < TN; j++) {
        wrow[j] = min(cb + j * 64u, p.m - 1u) * p.k;
    }
    var xrow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        xrow[i] = min(r0 + i, p.n - 1u) * p.k;
    }
    var acc: array<array<f32, TN>, TM>;
    for (var kk = 0u; kk < p.k; kk++) {
        var wv: array<f32, TN>;
        for (var j = 0u; j < TN; j++) {
            wv[j] = load_w(wrow[j] + kk);
        }
        for (var i = 0u; i < TM; i++) {
            let xv = x[xrow[i] + kk];
            for (var j = 0u; j < TN; j++) {
                acc[i][j] = fma(xv, wv[j], acc[i][j]);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        let r = r0 + i;
        if r >= p.n {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let c = cb + j * 64u;
            if c < p.m {
                var v = acc[i][j];
                if p.has_bias != 0u {
                    v += load_b(c);
                }
                y[r * p.m + c] = v;
            }
        }
    }
}

// TM = 8 rows (uniform), 4 columns per lane as a vec4, fully unrolled.
@compute @workgroup_size(64)
fn linear_b(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    let col_blocks = (p.m + 255u) / 256u;
    let r0 = (flat / col_blocks) * 8u;
    if r0 >= p.n {
        return;
    }
    let cb = (flat % col_blocks) * 256u + li;
    let w0 = min(cb, p.m - 1u) * p.k;
    let w1 = min(cb + 64u, p.m - 1u) * p.k;
    let w2 = min(cb + 128u, p.m - 1u) * p.k;
    let w3 = min(cb + 192u, p.m - 1u) * p.k;
    let nl = p.n - 1u;
    let x0 = min(r0, nl) * p.k;
    let x1 = min(r0 + 1u, nl) * p.k;
    let x2 = min(r0 + 2u, nl) * p.k;
    let x3 = min(r0 + 3u, nl) * p.k;
    let x4 = min(r0 + 4u, nl) * p.k;
    let x5 = min(r0 + 5u, nl) * p.k;
    let x6 = min(r0 + 6u, nl) * p.k;
    let x7 = min(r0 + 7u, nl) * p.k;
    var a0 = vec4<f32>(); var a1 = vec4<f32>(); var a2 = vec4<f32>(); var a3 = vec4<f32>();
    var a4 = vec4<f32>(); var a5 = vec4<f32>(); var a6 = vec4<f32>(); var a7 = vec4<f32>();
    for (var kk = 0u; kk < p.k; kk++) {
        let wv = vec4<f32>(load_w(w0 + kk), load_w(w1 + kk), load_w(w2 + kk), load_w(w3 + kk));
        a0 = fma(vec4<f32>(x[x0 + kk]), wv, a0);
        a1 = fma(vec4<f32>(x[x1 + kk]), wv, a1);
        a2 = fma(vec4<f32>(x[x2 + kk]), wv, a2);
        a3 = fma(vec4<f32>(x[x3 + kk]), wv, a3);
        a4 = fma(vec4<f32>(x[x4 + kk]), wv, a4);
        a5 = fma(vec4<f32>(x[x5 + kk]), wv, a5);
        a6 = fma(vec4<f32>(x[x6 + kk]), wv, a6);
        a7 = fma(vec4<f32>(x[x7 + kk]), wv, a7);
    }
    var acc = array<vec4<f32>, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
    for (var i = 0u; i < 8u; i++) {
        let r = r0 + i;
        if r >= p.n {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = cb + j * 64u;
            if c < p.m {
                var v = acc[i][j];
                if p.has_bias != 0u {
                    v += load_b(c);
                }
                y[r * p.m + c] = v;
            }
        }
    }
}

@group(0) @binding(5) var<storage, read> x4: array<vec4<f32>>;
var<workgroup> sh: array<vec4<f32>, 1024>;
var<workgroup> shs: array<f32, 4096>;

// micro: p.n = iterations, p.m = mode
@compute @workgroup_size(64)
fn micro(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    var a0 = vec4<f32>(); var a1 = vec4<f32>(); var a2 = vec4<f32>(); var a3 = vec4<f32>();
    let base = li * 16u;
    if p.m == 0u { // ssbo scalar divergent: 16 loads / iter
        for (var i = 0u; i < p.n; i++) {
            let o = (base + i * 7u) & 65535u;
            a0 += vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            a1 += vec4<f32>(x[o+4u], x[o + 5u], x[o + 6u], x[o + 7u]);
            a2 += vec4<f32>(x[o+8u], x[o + 9u], x[o + 10u], x[o + 11u]);
            a3 += vec4<f32>(x[o+12u], x[o + 13u], x[o + 14u], x[o + 15u]);
        }
    } else if p.m == 1u { // ssbo scalar uniform
        for (var i = 0u; i < p.n; i++) {
            let o = (flat + i * 7u) & 65535u;
            a0 += vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
            a1 += vec4<f32>(x[o+4u], x[o + 5u], x[o + 6u], x[o + 7u]);
            a2 += vec4<f32>(x[o+8u], x[o + 9u], x[o + 10u], x[o + 11u]);
            a3 += vec4<f32>(x[o+12u], x[o + 13u], x[o + 14u], x[o + 15u]);
        }
    } else if p.m == 2u { // shared scalar divergent
        for (var i = 0u; i < p.n; i++) {
            let o = (base + i * 7u) & 4095u;
            a0 += vec4<f32>(shs[o], shs[(o + 1u) & 4095u], shs[(o + 2u)& 4095u], shs[(o + 3u)& 4095u]);
            a1 += vec4<f32>(shs[(o+4u)& 4095u], shs[(o + 5u)& 4095u], shs[(o + 6u)& 4095u], shs[(o + 7u)& 4095u]);
            a2 += vec4<f32>(shs[(o+8u)& 4095u], shs[(o + 9u)& 4095u], shs[(o + 10u)& 4095u], shs[(o + 11u)& 4095u]);
            a3 += vec4<f32>(shs[(o+12u)& 4095u], shs[(o + 13u)& 4095u], shs[(o + 14u)& 4095u], shs[(o + 15u)& 4095u]);
        }
    } else if p.m == 3u { // shared scalar uniform
        for (var i = 0u; i < p.n; i++) {
            let o = (flat + i * 7u) & 4031u;
            a0 += vec4<f32>(shs[o], shs[o + 1u], shs[o + 2u], shs[o + 3u]);
            a1 += vec4<f32>(shs[o+4u], shs[o + 5u], shs[o + 6u], shs[o + 7u]);
            a2 += vec4<f32>(shs[o+8u], shs[o + 9u], shs[o + 10u], shs[o + 11u]);
            a3 += vec4<f32>(shs[o+12u], shs[o + 13u], shs[o + 14u], shs[o + 15u]);
        }
    } else if p.m == 4u { // shared vec4 divergent
        for (var i = 0u; i < p.n; i++) {
            let o = (li * 4u + i * 7u) & 1023u;
            a0 += sh[o];
            a1 += sh[(o + 1u) & 1023u];
            a2 += sh[(o + 2u) & 1023u];
            a3 += sh[(o + 3u) & 1023u];
        }
    } else if p.m == 5u { // shared vec4 uniform
        for (var i = 0u; i < p.n; i++) {
            let o = (flat + i * 7u) & 1023u;
            a0 += sh[o];
            a1 += sh[(o + 1u) & 1023u];
            a2 += sh[(o + 2u) & 1023u];
            a3 += sh[(o + 3u) & 1023u];
        }
    } else if p.m == 6u { // ssbo vec4 divergent
        for (var i = 0u; i < p.n; i++) {
            let o = (li * 4u + i * 7u) & 16383u;
            a0 += x4[o];
            a1 += x4[(o + 1u)];
            a2 += x4[(o + 2u)];
            a3 += x4[(o + 3u)];
        }
    } else if p.m == 7u { // ssbo vec4 uniform
        for (var i = 0u; i < p.n; i++) {
            let o = (flat + i * 7u) & 16383u;
            a0 += x4[o];
            a1 += x4[(o + 1u)];
            a2 += x4[(o + 2u)];
            a3 += x4[(o + 3u)];
        }
    }
    if p.has_bias == 7u { a0.x += bitcast<f32>(wt[0] + bias[0]); }
    y[flat * 64u + li] = a0.x + a1.y + a2.z + a3.w;
}

@compute @workgroup_size(64)
fn micro_u(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    var a0 = vec4<f32>(); var a1 = vec4<f32>(); var a2 = vec4<f32>(); var a3 = vec4<f32>();
    let o = (flat * 3u) & 32767u;
    a0 += vec4<f32>(x[o+0u], x[o+1u], x[o+2u], x[o+3u]);
    a1 += vec4<f32>(x[o+4u], x[o+5u], x[o+6u], x[o+7u]);
    a2 += vec4<f32>(x[o+8u], x[o+9u], x[o+10u], x[o+11u]);
    a3 += vec4<f32>(x[o+12u], x[o+13u], x[o+14u], x[o+15u]);
    a0 += vec4<f32>(x[o+16u], x[o+17u], x[o+18u], x[o+19u]);
    a1 += vec4<f32>(x[o+20u], x[o+21u], x[o+22u], x[o+23u]);
    a2 += vec4<f32>(x[o+24u], x[o+25u], x[o+26u], x[o+27u]);
    a3 += vec4<f32>(x[o+28u], x[o+29u], x[o+30u], x[o+31u]);
    a0 += vec4<f32>(x[o+32u], x[o+33u], x[o+34u], x[o+35u]);
    a1 += vec4<f32>(x[o+36u], x[o+37u], x[o+38u], x[o+39u]);
    a2 += vec4<f32>(x[o+40u], x[o+41u], x[o+42u], x[o+43u]);
    a3 += vec4<f32>(x[o+44u], x[o+45u], x[o+46u], x[o+47u]);
    a0 += vec4<f32>(x[o+48u], x[o+49u], x[o+50u], x[o+51u]);
    a1 += vec4<f32>(x[o+52u], x[o+53u], x[o+54u], x[o+55u]);
    a2 += vec4<f32>(x[o+56u], x[o+57u], x[o+58u], x[o+59u]);
    a3 += vec4<f32>(x[o+60u], x[o+61u], x[o+62u], x[o+63u]);
    a0 += vec4<f32>(x[o+64u], x[o+65u], x[o+66u], x[o+67u]);
    a1 += vec4<f32>(x[o+68u], x[o+69u], x[o+70u], x[o+71u]);
    a2 += vec4<f32>(x[o+72u], x[o+73u], x[o+74u], x[o+75u]);
    a3 += vec4<f32>(x[o+76u], x[o+77u], x[o+78u], x[o+79u]);
    a0 += vec4<f32>(x[o+80u], x[o+81u], x[o+82u], x[o+83u]);
    a1 += vec4<f32>(x[o+84u], x[o+85u], x[o+86u], x[o+87u]);
    a2 += vec4<f32>(x[o+88u], x[o+89u], x[o+90u], x[o+91u]);
    a3 += vec4<f32>(x[o+92u], x[o+93u], x[o+94u], x[o+95u]);
    a0 += vec4<f32>(x[o+96u], x[o+97u], x[o+98u], x[o+99u]);
    a1 += vec4<f32>(x[o+100u], x[o+101u], x[o+102u], x[o+103u]);
    a2 += vec4<f32>(x[o+104u], x[o+105u], x[o+106u], x[o+107u]);
    a3 += vec4<f32>(x[o+108u], x[o+109u], x[o+110u], x[o+111u]);
    a0 += vec4<f32>(x[o+112u], x[o+113u], x[o+114u], x[o+115u]);
    a1 += vec4<f32>(x[o+116u], x[o+117u], x[o+118u], x[o+119u]);
    a2 += vec4<f32>(x[o+120u], x[o+121u], x[o+122u], x[o+123u]);
    a3 += vec4<f32>(x[o+124u], x[o+125u], x[o+126u], x[o+127u]);
    if p.has_bias == 7u { a0.x += bitcast<f32>(wt[0] + bias[0]) + x4[0].x; }
    y[flat * 64u + li] = a0.x + a1.y + a2.z + a3.w;
}
@compute @workgroup_size(64)
fn micro_d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    var a0 = vec4<f32>(); var a1 = vec4<f32>(); var a2 = vec4<f32>(); var a3 = vec4<f32>();
    let o = (flat * 3u + li * 128u) & 32767u;
    a0 += vec4<f32>(x[o+0u], x[o+1u], x[o+2u], x[o+3u]);
    a1 += vec4<f32>(x[o+4u], x[o+5u], x[o+6u], x[o+7u]);
    a2 += vec4<f32>(x[o+8u], x[o+9u], x[o+10u], x[o+11u]);
    a3 += vec4<f32>(x[o+12u], x[o+13u], x[o+14u], x[o+15u]);
    a0 += vec4<f32>(x[o+16u], x[o+17u], x[o+18u], x[o+19u]);
    a1 += vec4<f32>(x[o+20u], x[o+21u], x[o+22u], x[o+23u]);
    a2 += vec4<f32>(x[o+24u], x[o+25u], x[o+26u], x[o+27u]);
    a3 += vec4<f32>(x[o+28u], x[o+29u], x[o+30u], x[o+31u]);
    a0 += vec4<f32>(x[o+32u], x[o+33u], x[o+34u], x[o+35u]);
    a1 += vec4<f32>(x[o+36u], x[o+37u], x[o+38u], x[o+39u]);
    a2 += vec4<f32>(x[o+40u], x[o+41u], x[o+42u], x[o+43u]);
    a3 += vec4<f32>(x[o+44u], x[o+45u], x[o+46u], x[o+47u]);
    a0 += vec4<f32>(x[o+48u], x[o+49u], x[o+50u], x[o+51u]);
    a1 += vec4<f32>(x[o+52u], x[o+53u], x[o+54u], x[o+55u]);
    a2 += vec4<f32>(x[o+56u], x[o+57u], x[o+58u], x[o+59u]);
    a3 += vec4<f32>(x[o+60u], x[o+61u], x[o+62u], x[o+63u]);
    a0 += vec4<f32>(x[o+64u], x[o+65u], x[o+66u], x[o+67u]);
    a1 += vec4<f32>(x[o+68u], x[o+69u], x[o+70u], x[o+71u]);
    a2 += vec4<f32>(x[o+72u], x[o+73u], x[o+74u], x[o+75u]);
    a3 += vec4<f32>(x[o+76u], x[o+77u], x[o+78u], x[o+79u]);
    a0 += vec4<f32>(x[o+80u], x[o+81u], x[o+82u], x[o+83u]);
    a1 += vec4<f32>(x[o+84u], x[o+85u], x[o+86u], x[o+87u]);
    a2 += vec4<f32>(x[o+88u], x[o+89u], x[o+90u], x[o+91u]);
    a3 += vec4<f32>(x[o+92u], x[o+93u], x[o+94u], x[o+95u]);
    a0 += vec4<f32>(x[o+96u], x[o+97u], x[o+98u], x[o+99u]);
    a1 += vec4<f32>(x[o+100u], x[o+101u], x[o+102u], x[o+103u]);
    a2 += vec4<f32>(x[o+104u], x[o+105u], x[o+106u], x[o+107u]);
    a3 += vec4<f32>(x[o+108u], x[o+109u], x[o+110u], x[o+111u]);
    a0 += vec4<f32>(x[o+112u], x[o+113u], x[o+114u], x[o+115u]);
    a1 += vec4<f32>(x[o+116u], x[o+117u], x[o+118u], x[o+119u]);
    a2 += vec4<f32>(x[o+120u], x[o+121u], x[o+122u], x[o+123u]);
    a3 += vec4<f32>(x[o+124u], x[o+125u], x[o+126u], x[o+127u]);
    if p.has_bias == 7u { a0.x += bitcast<f32>(wt[0] + bias[0]) + x4[0].x; }
    y[flat * 64u + li] = a0.x + a1.y + a2.z + a3.w;
}
@compute @workgroup_size(64)
fn micro_d4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) num: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, num);
    var a0 = vec4<f32>(); var a1 = vec4<f32>(); var a2 = vec4<f32>(); var a3 = vec4<f32>();
    let o = (flat * 3u + li * 32u) & 8191u;
    a0 += x4[o+0u];
    a1 += x4[o+1u];
    a2 += x4[o+2u];
    a3 += x4[o+3u];
    a0 += x4[o+4u];
    a1 += x4[o+5u];
    a2 += x4[o+6u];
    a3 += x4[o+7u];
    a0 += x4[o+8u];
    a1 += x4[o+9u];
    a2 += x4[o+10u];
    a3 += x4[o+11u];
    a0 += x4[o+12u];
    a1 += x4[o+13u];
    a2 += x4[o+14u];
    a3 += x4[o+15u];
    a0 += x4[o+16u];
    a1 += x4[o+17u];
    a2 += x4[o+18u];
    a3 += x4[o+19u];
    a0 += x4[o+20u];
    a1 += x4[o+21u];
    a2 += x4[o+22u];
    a3 += x4[o+23u];
    a0 += x4[o+24u];
    a1 += x4[o+25u];
    a2 += x4[o+26u];
    a3 += x4[o+27u];
    a0 += x4[o+28u];
    a1 += x4[o+29u];
    a2 += x4[o+30u];
    a3 += x4[o+31u];
    if p.has_bias == 7u { a0.x += bitcast<f32>(wt[0] + bias[0]) + x[0]; }
    y[flat * 64u + li] = a0.x + a1.y + a2.z + a3.w;
}
