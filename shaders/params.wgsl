// Prepended to every op shader but the FMA probe (see `ops::shader_source`); each
// declares its own `Params`, 16-byte aligned so that two fit in one array.

// A dispatch's parameters. The host binds two slots of them and only the first is
// read, at an index taken from the dispatch's size (always 0) so that no compiler sees
// a constant offset: Mesa 22's lavapipe folds uniform values read at constant offsets
// that decide loops and branches into the shader at every bind, and where its first
// bind made that look worthwhile it compiles the shader again at every dispatch
// (about 100 ms each; BENCHMARKS.md). Every entry point calls `load_params` first.
@group(0) @binding(0) var<uniform> params: array<Params, 2>;
var<private> p: Params;

fn load_params(num: vec3<u32>) {
    p = params[min(num.x, 1u) - 1u];
}
