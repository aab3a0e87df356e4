//! Every registered shader (with the common prelude) parses and validates in naga,
//! without a device.

use oscar_wgpu::ops::{shader_source, PRELUDES, SHADERS};

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
        if PRELUDES.iter().all(|p| p.stem != stem) {
            assert!(
                SHADERS.iter().any(|(n, _)| *n == stem),
                "shaders/{stem}.wgsl is not registered in ops::SHADERS"
            );
        }
    }
}

/// What wgpu's Metal, DX12 and Vulkan backends do with a shader before their own
/// compilers see it: overrides set (to their defaults here), then naga's MSL, HLSL and
/// SPIR-V writers, which reject what a backend cannot express. CI has none of those GPUs,
/// so this is where such a shader would show. (The writers do not check language
/// versions; the levels given are those that subgroup operations need.)
#[test]
fn every_shader_translates_for_metal_dx12_and_vulkan() {
    use naga::back::{hlsl, msl, spv};
    for (name, _) in SHADERS {
        let source = shader_source(name).unwrap();
        let module = naga::front::wgsl::parse_str(&source).unwrap();
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap();
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            None,
            &naga::back::PipelineConstants::default(),
        )
        .unwrap_or_else(|e| panic!("{name}.wgsl overrides: {e}"));
        let msl_options = msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        msl::write_string(
            &module,
            &info,
            &msl_options,
            &msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}.wgsl to MSL: {e}"));
        let hlsl_options = hlsl::Options {
            shader_model: hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        let mut hlsl_source = String::new();
        hlsl::Writer::new(
            &mut hlsl_source,
            &hlsl_options,
            &hlsl::PipelineOptions::default(),
        )
        .write(&module, &info, None)
        .unwrap_or_else(|e| panic!("{name}.wgsl to HLSL: {e}"));
        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{name}.wgsl to SPIR-V: {e}"));
    }
}

/// Every op shader's entry points read their parameters through `load_params` before
/// anything else (shaders/params.wgsl): a function reading `p` before it would see
/// zeros. The FMA probe keeps its plain uniform.
#[test]
fn every_entry_point_loads_its_params_first() {
    for (name, source) in SHADERS.iter().filter(|(n, _)| *n != "probe") {
        let entries: Vec<&str> = source.split("@compute").skip(1).collect();
        assert!(!entries.is_empty(), "{name}.wgsl has no entry point");
        for entry in entries {
            let (signature, body) = entry.split_once("{\n").unwrap();
            assert!(
                signature.contains("@builtin(num_workgroups) num: vec3<u32>")
                    && body.trim_start().starts_with("load_params(num);"),
                "{name}.wgsl: an entry point does not begin with load_params(num):{signature}"
            );
        }
    }
}
