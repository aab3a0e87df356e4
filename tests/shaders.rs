//! Every registered shader (with the common prelude) parses and validates in naga,
//! without a device.

use oscar_wgpu::ops::{shader_source, SHADERS};

#[test]
fn every_shader_validates() {
    assert!(!SHADERS.is_empty());
    for (name, _) in SHADERS {
        let source = shader_source(name).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {e:?}"));
    }
}

#[test]
fn every_wgsl_file_is_registered() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if stem != "common" && stem != "subgroup" {
            assert!(
                SHADERS.iter().any(|(n, _)| *n == stem),
                "shaders/{stem}.wgsl is not registered in ops::SHADERS"
            );
        }
    }
}
