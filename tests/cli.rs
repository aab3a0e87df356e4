//! End to end through the binary: the tiny model converted from the reference folder
//! and checkpoint encodes the reference photo and decodes it back to the reference
//! image at every level; bad input fails cleanly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use oscar_wgpu::codec::FreqTable;
use oscar_wgpu::codec::{ModelTag, OscarFile};
use oscar_wgpu::image_io::{psnr, read_rgb};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn oscar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oscar-wgpu"))
        .args(args)
        .env_remove("OSCAR_MODEL")
        .env("HOME", std::env::temp_dir().join("oscar-wgpu-test-home"))
        .output()
        .expect("the binary runs")
}

/// `oscar-wgpu encode <input> -o <output> --model <the tiny model> --force <extra>`.
fn encode_tiny(input: &Path, output: &Path, extra: &[&str]) -> Output {
    tiny("encode", input, output, extra)
}

/// `oscar-wgpu decode <input> -o <output> --model <the tiny model> --force <extra>`.
fn decode_tiny(input: &Path, output: &Path, extra: &[&str]) -> Output {
    tiny("decode", input, output, extra)
}

/// `oscar-wgpu encode <input> -o <output> --model <model>`, without --force.
fn encode_with(model: &Path, input: &Path, output: &Path) -> Output {
    oscar(&["encode", s(input), "-o", s(output), "--model", s(model)])
}

fn tiny(command: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let model = fixture("oscar-tiny.safetensors");
    let mut args = vec![
        command,
        s(input),
        "-o",
        s(output),
        "--model",
        s(&model),
        "--force",
    ];
    args.extend(extra);
    oscar(&args)
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed: {text}");
    text
}

fn fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "command should have failed");
    assert!(
        !stderr.contains("panicked"),
        "a panic is not an error message: {stderr}"
    );
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

fn reference_indices(level: usize) -> Vec<u32> {
    let bytes = std::fs::read(fixture("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("l{level}.indices")).unwrap();
    bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

fn model_tag() -> ModelTag {
    let file = oscar_wgpu::weights::ModelFile::open(&fixture("oscar-tiny.safetensors")).unwrap();
    ModelTag::from_hex(file.meta("content_hash").unwrap()).unwrap()
}

/// A path in this binary's scratch folder under the target directory, emptied once per
/// run: a folder per run in the system's temp dir left 24 MB behind every time.
fn tmp(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    dir.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn round_trip_reproduces_the_reference_at_levels_0_to_3() {
    round_trip_reproduces_the_reference(0..4);
}

#[test]
fn round_trip_reproduces_the_reference_at_levels_4_to_7() {
    round_trip_reproduces_the_reference(4..8);
}

/// Encodes and decodes the photo through the CLI at `levels`: the tokens must be the
/// reference's and the picture within 40 dB PSNR of its. Two tests of four levels each,
/// so that the test threads share the runs; one decode takes each test's four files
/// (several inputs into a folder), so that its kernels compile once.
fn round_trip_reproduces_the_reference(levels: std::ops::Range<usize>) {
    let model = fixture("oscar-tiny.safetensors");
    let photo = fixture("astronaut_256.png");
    let coded: Vec<PathBuf> = levels
        .clone()
        .map(|level| tmp(&format!("astronaut_{level}.oscar")))
        .collect();
    for (level, coded) in levels.clone().zip(&coded) {
        ok(&oscar(&[
            "encode",
            s(&photo),
            "-o",
            s(coded),
            "--model",
            s(&model),
            "--level",
            &level.to_string(),
            "--force",
        ]));
        let bytes = std::fs::read(coded).unwrap();
        let file = OscarFile::parse(&bytes, model_tag()).unwrap();
        let k = [256, 1024, 256, 2048, 16, 32, 64, 256][level];
        let indices = file.decode(&FreqTable::uniform(k).unwrap()).unwrap();
        assert_eq!(indices, reference_indices(level), "level {level}: indices");
    }
    let folder = tmp(&format!("decoded_{}_to_{}", levels.start, levels.end - 1));
    let mut args = vec!["decode"];
    args.extend(coded.iter().map(|c| s(c)));
    let out = format!("{}/", s(&folder));
    args.extend(["-o", &out, "--model", s(&model), "--force"]);
    ok(&oscar(&args));
    for level in levels {
        let decoded = folder.join(format!("astronaut_{level}.png"));
        let p = psnr(
            &read_rgb(&decoded).unwrap(),
            &read_rgb(&fixture(&format!("ref_level{level}.png"))).unwrap(),
        );
        assert!(
            p >= 40.0,
            "level {level}: {p:.1} dB against the reference image"
        );
    }
}

#[test]
fn info_reports_real_and_nominal_bpp() {
    let model = fixture("oscar-tiny.safetensors");
    let coded = tmp("info.oscar");
    ok(&encode_tiny(
        &fixture("astronaut_256.png"),
        &coded,
        &["--level", "7"],
    ));
    let text = ok(&oscar(&["info", s(&coded), "--model", s(&model)]));
    assert!(
        text.contains("bpp") && text.contains("nominal 0.1250"),
        "{text}"
    );
    let text = ok(&oscar(&["info", s(&model)]));
    assert!(
        text.contains("oscar-wgpu model") && text.contains("2048"),
        "{text}"
    );
    // --json: the same facts for scripts, on stdout.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = oscar(args);
        ok(&out);
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    };
    let file = json(&["info", s(&coded), "--model", s(&model), "--json"]);
    let bytes = std::fs::metadata(&coded).unwrap().len();
    assert_eq!(file["bytes"], bytes);
    assert_eq!(
        (&file["level"], &file["width"], &file["height"]),
        (&7.into(), &256.into(), &256.into())
    );
    assert_eq!(file["tokens"], serde_json::json!([32, 32]));
    assert_eq!(file["bpp"], 8.0 * bytes as f64 / 65536.0);
    assert_eq!(file["bpp_nominal"], 0.125);
    let model_json = json(&["info", s(&model), "--json"]);
    let levels = model_json["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 8);
    assert_eq!(levels[3]["codebook_size"], 2048);
    let adapters = json(&["adapters", "--json"]);
    assert!(
        adapters
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["backend"] == "vulkan"),
        "{adapters}"
    );
    // Neither: a picture, a folder, nothing at all.
    let photo = fixture("astronaut_256.png");
    fails(&oscar(&["info", s(&photo)]), "is a picture");
    let folder = fixture("");
    fails(&oscar(&["info", s(&folder)]), "cannot read");
    fails(&oscar(&["info", s(&tmp("absent.oscar"))]), "absent.oscar");
}

#[test]
fn info_verify_checks_files_and_models_whole() {
    let model = fixture("oscar-tiny.safetensors");
    let coded = tmp("verify.oscar");
    ok(&encode_tiny(
        &fixture("astronaut_256.png"),
        &coded,
        &["--level", "5"],
    ));
    let verify = |path: &Path| oscar(&["info", s(path), "--verify", "--model", s(&model)]);
    assert!(ok(&verify(&coded)).contains("intact"));
    assert!(ok(&verify(&model)).contains("intact"));
    assert!(ok(&verify(&fixture("oscar-tiny-f16.safetensors"))).contains("intact"));
    // One flipped bit in the last token byte, or far into the weights' data.
    let mut bytes = std::fs::read(&coded).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x04;
    let damaged = tmp("verify-damaged.oscar");
    std::fs::write(&damaged, &bytes).unwrap();
    fails(&verify(&damaged), "damaged");
    let mut weights = std::fs::read(&model).unwrap();
    let middle = weights.len() / 2;
    weights[middle] ^= 0x01;
    let damaged = tmp("verify-damaged.safetensors");
    std::fs::write(&damaged, &weights).unwrap();
    fails(&verify(&damaged), "is damaged");
    // Without --verify the damaged model still describes itself.
    ok(&oscar(&["info", s(&damaged)]));
}

#[test]
fn unreadable_images_are_clear_errors() {
    let png = std::fs::read(fixture("astronaut_256.png")).unwrap();
    for (name, bytes) in [
        ("cut.png", &png[..png.len() / 3]),
        ("text.png", &b"not a picture"[..]),
        ("empty.png", &[][..]),
    ] {
        let input = tmp(name);
        std::fs::write(&input, bytes).unwrap();
        let coded = tmp(&format!("{name}.oscar"));
        fails(
            &encode_tiny(&input, &coded, &[]),
            &format!("cannot decode {}", input.display()),
        );
        assert!(!coded.exists(), "{name} left {}", coded.display());
    }
    // Wider than the format holds: refused from the PNG header.
    let wide = tmp("wide.png");
    image::RgbImage::new(16385, 1).save(&wide).unwrap();
    fails(
        &encode_tiny(&wide, &tmp("wide.oscar"), &[]),
        "16385×1 exceeds the format's 16384 pixels per side",
    );
}

#[test]
fn a_dropped_alpha_channel_is_a_warning() {
    let rgba = tmp("rgba.png");
    image::RgbaImage::from_pixel(70, 50, image::Rgba([200, 40, 40, 128]))
        .save(&rgba)
        .unwrap();
    let encode = |extra: &[&str]| ok(&encode_tiny(&rgba, &tmp("rgba.oscar"), extra));
    assert!(encode(&[]).contains("alpha channel is dropped"));
    assert!(!encode(&["--quiet"]).contains("alpha"));
}

/// A picture in Display P3 is coded in sRGB (`-v` says so); one whose profile cannot be
/// read is coded as it is, with a warning.
#[test]
fn colour_profiles_are_applied_or_reported() {
    use image::ImageEncoder;
    let with_profile = |name: &str, icc: Vec<u8>| {
        let img = image::RgbImage::from_pixel(70, 50, image::Rgb([200, 120, 90]));
        let mut png = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
        encoder.set_icc_profile(icc).unwrap();
        encoder
            .write_image(img.as_raw(), 70, 50, image::ExtendedColorType::Rgb8)
            .unwrap();
        let path = tmp(name);
        std::fs::write(&path, png).unwrap();
        path
    };
    let p3 = with_profile(
        "p3.png",
        moxcms::ColorProfile::new_display_p3().encode().unwrap(),
    );
    let text = ok(&encode_tiny(&p3, &tmp("p3.oscar"), &["-v"]));
    assert!(text.contains("→ sRGB"), "{text}");
    let junk = with_profile("junk_icc.png", b"not a profile".to_vec());
    let text = ok(&encode_tiny(&junk, &tmp("junk_icc.oscar"), &[]));
    assert!(text.contains("ICC profile is unreadable"), "{text}");
}

#[test]
fn existing_output_is_not_overwritten() {
    let model = fixture("oscar-tiny.safetensors");
    let coded = tmp("keep.oscar");
    std::fs::write(&coded, b"precious").unwrap();
    fails(
        &encode_with(&model, &fixture("astronaut_256.png"), &coded),
        "--force",
    );
    assert_eq!(std::fs::read(&coded).unwrap(), b"precious");
}

#[test]
fn corrupt_and_truncated_files_are_clear_errors() {
    let coded = tmp("good.oscar");
    ok(&encode_tiny(
        &fixture("astronaut_256.png"),
        &coded,
        &["--level", "6"],
    ));
    let bytes = std::fs::read(&coded).unwrap();
    let truncated = tmp("truncated.oscar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails(&decode_tiny(&truncated, &tmp("t.png"), &[]), "corrupt");
    // One flipped bit, in the payload or in a latent norm: an error, not another picture.
    for at in [bytes.len() / 2, 7] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        let path = tmp("damaged.oscar");
        std::fs::write(&path, &damaged).unwrap();
        let png = tmp("d.png");
        fails(&decode_tiny(&path, &png, &[]), "damaged");
        assert!(!png.exists(), "a damaged file left {}", png.display());
    }
    let garbage = tmp("garbage.oscar");
    std::fs::write(&garbage, b"this is not an oscar file at all").unwrap();
    fails(&decode_tiny(&garbage, &tmp("g.png"), &[]), "error");
}

/// A .oscar file is read once (it may be a pipe) and no further than the largest valid
/// file: `/dev/zero` named `.oscar` was read until memory ran out. One whose first byte is
/// damaged is a damaged .oscar file, not a model file.
#[test]
fn oscar_files_are_read_once_and_only_so_far() {
    let header = oscar_wgpu::codec::Header {
        level: 7,
        width: 64,
        height: 64,
        model: model_tag(),
        a_z: [1.0; 4],
    };
    let table = FreqTable::uniform(256).unwrap();
    let mut bytes = oscar_wgpu::codec::encode(&header, &[3; 64], &table).unwrap();
    let good = tmp("small.oscar");
    std::fs::write(&good, &bytes).unwrap();
    ok(&oscar(&["info", s(&good)]));
    bytes[0] ^= 1;
    let damaged = tmp("magic.oscar");
    std::fs::write(&damaged, &bytes).unwrap();
    fails(&oscar(&["info", s(&damaged)]), "bad magic byte");
    #[cfg(unix)]
    {
        let zero = tmp("zero.oscar");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        fails(&oscar(&["info", s(&zero)]), "larger than any .oscar file");
        fails(
            &decode_tiny(&zero, &tmp("zero.png"), &[]),
            "larger than any .oscar file",
        );
        // Through a pipe, read once.
        let piped = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat '{}' | '{}' info /dev/stdin",
                good.display(),
                env!("CARGO_BIN_EXE_oscar-wgpu")
            ))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&piped.stdout);
        assert!(piped.status.success() && said.contains("level 7"), "{said}");
    }
}

/// The tiny model with its safetensors header (metadata, dtypes, shapes) edited.
fn edited_model(name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let bytes = std::fs::read(fixture("oscar-tiny.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&text);
    file.extend_from_slice(&bytes[8 + n..]);
    let path = tmp(name);
    std::fs::write(&path, file).unwrap();
    path
}

/// The tiny model with element `index` of its f32 tensor `tensor` set to `value`.
fn model_with_value(name: &str, tensor: &str, index: usize, value: f32) -> PathBuf {
    model_with_values(name, &[(tensor, index, value)])
}

/// The tiny model with each (tensor, index, value) of `edits` made to its f32 tensors.
fn model_with_values(name: &str, edits: &[(&str, usize, f32)]) -> PathBuf {
    let mut bytes = std::fs::read(fixture("oscar-tiny.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for &(tensor, index, value) in edits {
        assert_eq!(header[tensor]["dtype"], "F32");
        let start = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
        let at = 8 + n + start + 4 * index;
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A weight that is not a number, one that f16 cannot hold under --f16, and arithmetic
/// that overflows are refused, and nothing is written. A NaN weight and an overflowing
/// decoder gave a black picture and exit status 0; an overflowing VAE encoder, a header
/// error; an overflowing hyper-encoder, a file of token 0 throughout.
#[test]
fn weights_and_results_that_are_not_numbers_are_refused() {
    let photo = tmp("finite-64.png");
    let astronaut = read_rgb(&fixture("astronaut_256.png")).unwrap();
    image::imageops::crop_imm(&astronaut, 96, 32, 64, 64)
        .to_image()
        .save(&photo)
        .unwrap();
    let coded = tmp("finite.oscar");
    ok(&encode_tiny(&photo, &coded, &["--level", "5"]));
    let picture = tmp("finite.png");
    let decode = |model: &Path, extra: &[&str]| {
        let mut args = vec!["decode", s(&coded), "-o", s(&picture), "--model", s(model)];
        args.extend(extra);
        oscar(&args)
    };
    let out_weight = "vae.decoder.conv_out.weight";
    let nan = model_with_value("nan.safetensors", out_weight, 5, f32::NAN);
    fails(
        &decode(&nan, &[]),
        "weight 'vae.decoder.conv_out.weight' holds NaN at index 5, not a finite number",
    );
    let in_weight = "vae.decoder.conv_in.weight";
    let halves = model_with_value("halves.safetensors", in_weight, 7, 1e5);
    fails(
        &decode(&halves, &["--f16"]),
        "weight 'vae.decoder.conv_in.weight' holds 100000, beyond the ±65504 of f16",
    );
    // Whole, and in stages with the VAE tiled.
    let overflow = model_with_value("overflow.safetensors", in_weight, 5, 3e38);
    for extra in [&[][..], &["--tile", "64"]] {
        fails(
            &decode(&overflow, extra),
            "the decoded picture (12288 of 12288 values) came out as NaN or infinite",
        );
    }
    assert!(!picture.exists());

    let encoder = model_with_value("encoder.safetensors", "vae.encoder.conv_in.weight", 5, 3e38);
    let recoded = tmp("overflow.oscar");
    for extra in [&[][..], &["--tile", "64"]] {
        let mut args = vec![
            "encode",
            s(&photo),
            "-o",
            s(&recoded),
            "--model",
            s(&encoder),
        ];
        args.extend(extra);
        fails(
            &oscar(&args),
            "finite-64.png: the latents' norm A_z[0] came out as NaN or infinite",
        );
    }
    // Channel 0 of the backbone's first layer near f32's largest, times another such
    // weight: infinities in the features of some tokens (15 of 64 on lavapipe).
    let features = model_with_values(
        "features.safetensors",
        &[
            ("hyper.5.backbone.0.bias", 0, 3e38),
            ("hyper.5.backbone.1.layers.0.weight", 0, 3e38),
        ],
    );
    let out = encode_with(&features, &photo, &recoded);
    fails(&out, "finite-64.png: the hyper-encoder's features (");
    fails(&out, " of 64 tokens) came out as NaN or infinite");
    assert!(!recoded.exists());
}

/// A model whose levels disagree with its tensors or schedule is refused when it loads:
/// a short codebook decoded indices past its end and a timestep past the schedule made
/// files the model then refused; an integer weight was read as floats; betas past 1
/// decoded every picture to NaNs.
#[test]
fn a_model_that_contradicts_itself_is_refused() {
    let levels = |edit: fn(&mut serde_json::Value)| {
        move |h: &mut serde_json::Value| {
            let meta = &mut h["__metadata__"];
            let mut levels: serde_json::Value =
                serde_json::from_str(meta["levels"].as_str().unwrap()).unwrap();
            edit(&mut levels[5]);
            meta["levels"] = levels.to_string().into();
        }
    };
    let cases = [
        (
            edited_model(
                "codebook.safetensors",
                levels(|l| l["codebook_size"] = 64.into()),
            ),
            "'hyper.5.quantizer.codebook' is [32, 32], not 64 × 32",
        ),
        (
            edited_model(
                "timestep.safetensors",
                levels(|l| l["timestep"] = 5000.into()),
            ),
            "timestep 5000 is outside the schedule's 1000 steps",
        ),
        (
            edited_model("version.safetensors", |h| {
                h["__metadata__"]["format_version"] = "99".into()
            }),
            "model format version 99",
        ),
        (
            edited_model("betas.safetensors", |h| {
                let meta = &mut h["__metadata__"];
                let mut scheduler: serde_json::Value =
                    serde_json::from_str(meta["scheduler_config"].as_str().unwrap()).unwrap();
                scheduler["beta_end"] = 1.5.into();
                meta["scheduler_config"] = scheduler.to_string().into();
            }),
            "scheduler: betas 0.00085 to 1.5 over 1000 steps",
        ),
    ];
    for (model, message) in &cases {
        fails(&oscar(&["info", s(model)]), message);
    }
    let integer = edited_model("integer.safetensors", |h| {
        h["vae.decoder.conv_out.weight"]["dtype"] = "I32".into()
    });
    let coded = tmp("integer.oscar");
    fails(
        &encode_with(&integer, &fixture("astronaut_256.png"), &coded),
        "'vae.decoder.conv_out.weight' is I32",
    );
}

/// Options and inputs that cannot work are refused by name before anything runs.
#[test]
fn impossible_requests_are_refused_by_name() {
    fails(
        &oscar(&["bench", "--synthetic", "--runs", "0"]),
        "0 is not in 1..",
    );
    // Before the probes and the runs of the levels that exist.
    fails(
        &oscar(&["bench", "--synthetic", "--levels", "5,9", "--sizes", "64"]),
        "--levels 9: this model has levels 0..=7",
    );
    fails(
        &oscar(&["bench", "--synthetic", "--tile", "30", "--sizes", "64"]),
        "--tile 30: tiles are a positive multiple of 8 pixels",
    );
    let coded = tmp("already.oscar");
    std::fs::write(&coded, b"").unwrap();
    fails(
        &encode_tiny(&coded, &tmp("again.oscar"), &[]),
        "is coded already: decode it",
    );
    fails(
        &encode_with(&fixture(""), &fixture("astronaut_256.png"), &tmp("x.oscar")),
        "it is a folder",
    );
    // Under the lowest level's nominal rate, and a level the model does not have.
    let unwritten = tmp("unwritten.oscar");
    let photo = fixture("astronaut_256.png");
    fails(
        &encode_tiny(&photo, &unwritten, &["--bpp", "0.001"]),
        "no level fits 0.001 bpp; the lowest is 0.0019 bpp",
    );
    fails(
        &encode_tiny(&photo, &unwritten, &["--level", "8"]),
        "level 8 does not exist: this model has levels 0..=7",
    );
    assert!(!unwritten.exists());
    let home = tmp("home");
    std::fs::create_dir_all(home.join(".config/oscar-wgpu")).unwrap();
    std::fs::write(
        home.join(".config/oscar-wgpu/config.json"),
        r#"{"model": 5}"#,
    )
    .unwrap();
    let by_config = Command::new(env!("CARGO_BIN_EXE_oscar-wgpu"))
        .args([
            "encode",
            s(&fixture("astronaut_256.png")),
            "-o",
            s(&tmp("by-config.oscar")),
        ])
        .env_remove("OSCAR_MODEL")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", &home)
        .output()
        .unwrap();
    fails(&by_config, "\"model\" is 5, not the path of a model file");
}

#[test]
fn missing_or_wrong_model_is_explained() {
    let coded = tmp("nomodel.oscar");
    fails(
        &oscar(&["encode", s(&fixture("astronaut_256.png")), "-o", s(&coded)]),
        "convert_oscar.py",
    );
    fails(
        &encode_with(
            &fixture("reference.safetensors"),
            &fixture("astronaut_256.png"),
            &coded,
        ),
        "not an oscar-wgpu model",
    );
    fails(
        &encode_with(
            &fixture("astronaut_256.png"),
            &fixture("astronaut_256.png"),
            &coded,
        ),
        "not a safetensors file",
    );
}

#[test]
fn a_folder_encodes_with_one_model_and_bpp_picks_the_level() {
    let dir = tmp("folder_in");
    std::fs::create_dir_all(&dir).unwrap();
    let photo = read_rgb(&fixture("astronaut_256.png")).unwrap();
    // Two crops of odd sizes: padded to 64 on encode, cropped back on decode.
    image::imageops::crop_imm(&photo, 10, 20, 100, 70)
        .to_image()
        .save(dir.join("a.png"))
        .unwrap();
    image::imageops::crop_imm(&photo, 0, 0, 64, 130)
        .to_image()
        .save(dir.join("b.jpg"))
        .unwrap();
    let coded = tmp("folder_coded");
    let text = ok(&encode_tiny(&dir, &coded, &["--bpp", "0.05"]));
    // 0.05 bpp: the best level whose nominal rate fits is level 3 (0.043).
    assert!(text.contains("level 3"), "{text}");
    let decoded = tmp("folder_decoded");
    ok(&decode_tiny(&coded, &decoded, &[]));
    assert_eq!(
        read_rgb(&decoded.join("a.png")).unwrap().dimensions(),
        (100, 70)
    );
    assert_eq!(
        read_rgb(&decoded.join("b.png")).unwrap().dimensions(),
        (64, 130)
    );
}

/// `-o photo.jpg` writes a JPEG (the same picture as the PNG, within JPEG's loss); an
/// extension no format has is refused before the model loads, and so is an encode to a
/// picture's name.
#[test]
fn decode_writes_the_format_its_output_names() {
    let coded = tmp("formats.oscar");
    ok(&encode_tiny(
        &fixture("astronaut_256.png"),
        &coded,
        &["--level", "0"],
    ));
    let (png, jpg) = (tmp("formats.png"), tmp("formats.jpg"));
    ok(&decode_tiny(&coded, &png, &[]));
    ok(&decode_tiny(&coded, &jpg, &[]));
    let bytes = std::fs::read(&jpg).unwrap();
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Jpeg
    );
    let (a, b) = (read_rgb(&png).unwrap(), read_rgb(&jpg).unwrap());
    assert!(psnr(&a, &b) > 30.0, "{} dB", psnr(&a, &b));
    let bmp = tmp("formats.bmp");
    fails(&decode_tiny(&coded, &bmp, &[]), ".webp");
    assert!(!bmp.exists());
    // The other way round: an .oscar stream under a picture's name, even with --force.
    let photo = tmp("formats_photo.jpg");
    std::fs::copy(&jpg, &photo).unwrap();
    fails(
        &encode_tiny(&fixture("astronaut_256.png"), &photo, &[]),
        "a picture's name",
    );
    assert_eq!(std::fs::read(&photo).unwrap(), bytes);
}

#[test]
fn a_file_from_another_model_is_refused() {
    let coded = tmp("other_model.oscar");
    ok(&encode_tiny(
        &fixture("astronaut_256.png"),
        &coded,
        &["--level", "0"],
    ));
    fails(
        &oscar(&[
            "decode",
            s(&coded),
            "-o",
            s(&tmp("other.png")),
            "--model",
            s(&fixture("oscar-tiny-f16.safetensors")),
            "--force",
        ]),
        "model",
    );
}

#[test]
fn tiles_and_memory_budgets_from_the_command_line() {
    let model = fixture("oscar-tiny.safetensors");
    let photo = fixture("astronaut_256.png");
    let coded = tmp("tiles.oscar");
    let (whole, tiled) = (tmp("whole.png"), tmp("tiled.png"));
    ok(&encode_tiny(&photo, &coded, &["--tile", "128"]));
    ok(&decode_tiny(&coded, &whole, &[]));
    let text = ok(&decode_tiny(&coded, &tiled, &["--tile", "128", "-v"]));
    assert!(text.contains("VAE 3×3 tiles"), "-v names the tiles: {text}");
    let p = psnr(&read_rgb(&tiled).unwrap(), &read_rgb(&whole).unwrap());
    assert!(
        p >= 60.0,
        "tiled and untiled decodes of one file: {p:.1} dB"
    );

    fails(
        &decode_tiny(&coded, &tiled, &["--tile", "100"]),
        "multiple of 8",
    );
    fails(
        &decode_tiny(&coded, &tiled, &["--max-gpu-memory", "64K"]),
        "raise --max-gpu-memory",
    );
    fails(
        &encode_tiny(&photo, &coded, &["--max-gpu-memory", "64K"]),
        "raise --max-gpu-memory",
    );
    fails(
        &oscar(&[
            "decode",
            s(&coded),
            "-o",
            s(&tiled),
            "--model",
            s(&model),
            "--max-gpu-memory",
            "lots",
        ]),
        "not a size",
    );
}

/// The harness on the tiny model: one CSV record per stage with the schema's columns
/// on stdout, and with -v the GPU time of every kernel on stderr (stdout stays CSV).
#[test]
fn bench_reports_stages_and_kernels() {
    let model = fixture("oscar-tiny.safetensors");
    // Forced VAE tiles: the staged runs' stages are named like the whole ones.
    let out = oscar(&[
        "bench",
        "--model",
        s(&model),
        "--sizes",
        "128",
        "--tile",
        "64",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--csv",
        "-v",
    ]);
    ok(&out);
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "adapter,backend,driver,precision,kernels,version,size,level,stage,median_ms,min_ms,max_ms,gflops,peak_fraction,peak_memory_bytes,machine_drift");
    let records: Vec<&str> = lines.collect();
    let stages: Vec<&str> = records
        .iter()
        .map(|l| l.rsplit(',').nth(7).unwrap())
        .collect();
    let kernels = |l: &&str| l.rsplit(',').nth(11).unwrap().to_string();
    assert!(
        records
            .iter()
            .all(|l| ["subgroup8", "portable"].contains(&kernels(l).as_str())),
        "{records:?}"
    );
    for stage in [
        "encode_total",
        "decode_total",
        "vae_encode",
        "hyper_encode",
        "vq",
        "range_decode",
        "hyper_decode",
        "unet",
        "vae_decode",
    ] {
        assert!(stages.contains(&stage), "no {stage} record in {stages:?}");
    }
    assert_eq!(
        stages.len(),
        10,
        "one record per stage, none unnamed: {stages:?}"
    );
    // -v: where each run's GPU time went, on stderr.
    let log = String::from_utf8_lossy(&out.stderr);
    for run in ["encode", "decode"] {
        assert!(
            log.contains(&format!("size 128, level 5, {run}: GPU time by kernel")),
            "{log}"
        );
    }
    // The portable kernels say so in every record (at 64², as lavapipe runs them
    // several times slower than its own), and so does the level asked for.
    let portable = oscar(&[
        "--portable-kernels",
        "bench",
        "--model",
        s(&model),
        "--sizes",
        "64",
        "--levels",
        "0",
        "--runs",
        "1",
        "--warmup",
        "1",
        "--no-stages",
        "--csv",
        "-v",
    ]);
    ok(&portable);
    let csv = String::from_utf8_lossy(&portable.stdout);
    // No timestamped runs, so no table of kernels: -v says why instead.
    let log = String::from_utf8_lossy(&portable.stderr);
    assert!(!log.contains(": GPU time by kernel"), "{log}");
    assert!(log.contains("no GPU time by kernel (--no-stages)"), "{log}");
    // With --no-stages: the first run (a warm-up was asked for), the two totals and the
    // two range coders.
    assert_eq!(csv.lines().count(), 6, "{csv}");
    let first_run = csv
        .lines()
        .find(|l| l.rsplit(',').nth(7) == Some("first_run"))
        .unwrap_or_else(|| panic!("no first_run record in {csv}"));
    let first_ms: f64 = first_run.rsplit(',').nth(6).unwrap().parse().unwrap();
    assert!(first_ms > 0.0, "{first_run}");
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.rsplit(',').nth(11) == Some("portable")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.rsplit(',').nth(8) == Some("0")),
        "{csv}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "size 128, level 5, encode: GPU time by kernel",
        "size 128, level 5, decode: GPU time by kernel",
        "conv2d",
        "group_norm",
    ] {
        assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
    }
}

/// Pictures are padded to multiples of 64, so the bench times only those sizes: another
/// size is refused before anything runs (`--plan-only` once planned 960 and called it 1000).
#[test]
fn bench_sizes_are_multiples_of_64() {
    for size in ["1000", "0", "-64"] {
        let sizes = format!("--sizes={size}");
        fails(
            &oscar(&["bench", "--synthetic", "--plan-only", &sizes]),
            "multiple of 64",
        );
    }
}

/// The kernel benchmark narrowed by a shape (`--only` matches shapes too) as JSON: one
/// record, the probes (and the FMA probe read beside its runs), and its fraction of the
/// roofline never below its fraction of the FMA peak (the roofline is the lower ceiling).
#[test]
fn kernel_bench_selects_by_shape_and_reports_the_roofline() {
    let out = oscar(&["bench", "--kernels", "--only", "4096 q × 77 k", "--json"]);
    ok(&out);
    // stdout alone: stderr may carry a driver's complaints (EGL's about XDG_RUNTIME_DIR).
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let kernels = report["kernels"].as_array().expect("a kernels array");
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    let k = &kernels[0];
    assert_eq!(k["name"], "attention");
    assert_eq!(k["shape"], "4096 q × 77 k, 5 heads × 64");
    let field = |name: &str| {
        k[name]
            .as_f64()
            .unwrap_or_else(|| panic!("no {name} in {k}"))
    };
    assert!(report["fma_peak_gflops"].as_f64().unwrap() > 0.0);
    assert!(report["bandwidth_gbs"].as_f64().unwrap() > 0.0);
    assert!(field("gflops") > 0.0 && field("bytes") > 0.0 && field("flops_per_byte") > 0.0);
    assert!(field("probe_gflops") > 0.0 && field("peak_fraction") > 0.0);
    // Every run has a probe reading on either side.
    let runs = k["run_ms"].as_array().expect("run_ms").len();
    let readings = k["probe_readings"]
        .as_array()
        .expect("probe_readings")
        .len();
    assert!(runs >= 1 && readings == runs + 1, "{k}");
    assert!(field("roofline_fraction") >= field("peak_fraction"), "{k}");
}

/// With --all-adapters, machine-readable results name each adapter with its backend
/// (lavapipe shows as one "llvmpipe" on Vulkan and on GL): the kernel benchmark as one
/// JSON list, where it printed one document per adapter, and the plans of every
/// adapter, where it planned the first only. A plan that does not fit the budget is a
/// row that says so, not the end of the table.
#[test]
fn bench_results_name_every_adapter() {
    let adapters: serde_json::Value =
        serde_json::from_slice(&oscar(&["adapters", "--json"]).stdout).expect("adapters");
    let mut want: Vec<String> = adapters
        .as_array()
        .expect("a list of adapters")
        .iter()
        .map(|a| format!("{} {}", a["name"], a["backend"]))
        .collect();
    want.sort();
    assert!(!want.is_empty());

    let only = "4096 q × 77 k";
    let all = [
        "bench",
        "--kernels",
        "--only",
        only,
        "--all-adapters",
        "--json",
    ];
    let out = oscar(&all);
    ok(&out);
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON list");
    let mut got: Vec<String> = reports
        .as_array()
        .expect("a list of reports")
        .iter()
        .map(|r| {
            assert_eq!(r["kernels"].as_array().map(Vec::len), Some(1), "{r}");
            assert!(!r["driver"].as_str().unwrap().starts_with(' '), "{r}");
            format!("{} {}", r["adapter"], r["backend"])
        })
        .collect();
    got.sort();
    assert_eq!(got, want);
    let vulkan = [
        "bench",
        "--kernels",
        "--only",
        only,
        "--backend",
        "vulkan",
        "--csv",
    ];
    let out = oscar(&vulkan);
    ok(&out);
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one kernel: {csv}");
    assert!(
        lines[0].starts_with("adapter,backend,driver,fma_peak_gflops,"),
        "{csv}"
    );
    assert!(
        lines[1].contains(",vulkan,")
            && lines[1].contains(",attention,\"4096 q × 77 k, 5 heads × 64\","),
        "{csv}"
    );

    let out = oscar(&[
        "bench",
        "--plan-only",
        "--sizes",
        "256",
        "--all-adapters",
        "--csv",
    ]);
    let csv = ok(&out);
    let lines: Vec<&str> = csv.lines().filter(|l| l.starts_with('"')).collect();
    assert_eq!(
        lines.len(),
        2 * want.len(),
        "a decode and an encode per adapter: {csv}"
    );
    for adapter in adapters.as_array().unwrap() {
        let backend = format!(",{},", adapter["backend"].as_str().unwrap());
        assert_eq!(
            lines.iter().filter(|l| l.contains(&backend)).count(),
            2,
            "{csv}"
        );
    }

    let over = ["--sizes", "8192", "--max-gpu-memory", "100M", "--json"];
    let out = oscar(&[&["bench", "--plan-only", "--backend", "vulkan"][..], &over].concat());
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON plans");
    let runs: Vec<(&str, &str)> = plans
        .as_array()
        .expect("a list of plans")
        .iter()
        .map(|p| {
            assert!(p["tiled_bytes"].is_null(), "{p}");
            (p["run"].as_str().unwrap(), p["tiles"].as_str().unwrap())
        })
        .collect();
    assert_eq!(runs.len(), 2, "{plans}");
    assert!(runs[0].0 == "decode" && runs[0].1.contains("does not fit in 104857600 bytes"));
    assert!(runs[1].0 == "encode" && runs[1].1.contains("does not fit in 104857600 bytes"));
}

/// `-h` of every command names what each option and argument does: one with no text
/// beside or under it is something a user cannot learn about without reading the source.
#[test]
fn every_option_and_argument_says_what_it_does() {
    for command in ["adapters", "info", "encode", "decode", "bench"] {
        let help = ok(&oscar(&[command, "-h"]));
        let lines: Vec<&str> = help.lines().map(str::trim).collect();
        let mut options = 0;
        for (i, line) in lines.iter().enumerate() {
            // Options, and the arguments (`<INPUTS>...`) listed under "Arguments:".
            if line.starts_with('-') {
                options += 1;
            } else if !line.starts_with('<') {
                continue;
            }
            // `-o, --output <OUTPUT>  Output file …`, or (where clap wraps the help
            // under the option) the text on the next line.
            let beside = line
                .split_whitespace()
                .any(|w| !w.starts_with('-') && !w.starts_with('<'));
            let under = lines
                .get(i + 1)
                .is_some_and(|next| !next.is_empty() && !next.starts_with('-'));
            assert!(
                beside || under,
                "`oscar-wgpu {command} -h`: {line:?} has no help:\n{help}"
            );
        }
        assert!(
            options >= 3,
            "`oscar-wgpu {command} -h` lists options:\n{help}"
        );
    }
}

/// A backend or adapter that is not there: a message that says which and where to look,
/// and a failing exit, before any model loads.
#[test]
fn a_missing_backend_or_adapter_is_a_clear_error() {
    let photo = fixture("astronaut_256.png");
    let model = fixture("oscar-tiny.safetensors");
    let coded = tmp("no_adapter.oscar");
    let encode_on = |gpu: &[&str]| {
        let mut args = gpu.to_vec();
        args.extend(["encode", s(&photo), "-o", s(&coded), "--model", s(&model)]);
        oscar(&args)
    };
    fails(
        &oscar(&["--backend", "foo", "adapters"]),
        "unknown backend 'foo'",
    );
    fails(
        &encode_on(&["--adapter", "99"]),
        "no GPU adapter with index 99",
    );
    fails(
        &encode_on(&["--adapter", "no-such-gpu"]),
        "no GPU adapter named like 'no-such-gpu'",
    );
    // The variables, as wgpu's own examples read them.
    let by_variable = Command::new(env!("CARGO_BIN_EXE_oscar-wgpu"))
        .args(["adapters"])
        .env("WGPU_BACKEND", "vulkan,bogus")
        .output()
        .unwrap();
    fails(&by_variable, "unknown backend 'bogus'");
    if cfg!(target_os = "linux") {
        let metal = oscar(&["--backend", "metal", "adapters", "--json"]);
        fails(&metal, "no GPU adapter found for backend 'metal'");
        // Lavapipe cannot give Metal.
        assert!(!String::from_utf8_lossy(&metal.stderr).contains("lavapipe"));
    }
    assert!(!coded.exists());
}

/// `--padding reflect` reaches the encoder (a picture padded by 28 and 58 pixels codes
/// otherwise than edge-padded), and `--f16` the decoder (packed f16 weights: another
/// picture, within 40 dB of the f32 one, as tests/parity.rs requires of the library).
#[test]
fn reflect_padding_and_f16_weights_reach_the_model() {
    let dir = tmp("padding_f16");
    std::fs::create_dir_all(&dir).unwrap();
    let photo = read_rgb(&fixture("astronaut_256.png")).unwrap();
    let input = dir.join("crop.png");
    image::imageops::crop_imm(&photo, 10, 20, 100, 70)
        .to_image()
        .save(&input)
        .unwrap();
    let (edge, reflect) = (dir.join("edge.oscar"), dir.join("reflect.oscar"));
    ok(&encode_tiny(&input, &edge, &[]));
    ok(&encode_tiny(&input, &reflect, &["--padding", "reflect"]));
    assert_ne!(
        std::fs::read(&edge).unwrap(),
        std::fs::read(&reflect).unwrap()
    );
    let (f32_png, f16_png) = (dir.join("f32.png"), dir.join("f16.png"));
    ok(&decode_tiny(&edge, &f32_png, &[]));
    ok(&decode_tiny(&edge, &f16_png, &["--f16"]));
    let (a, b) = (read_rgb(&f32_png).unwrap(), read_rgb(&f16_png).unwrap());
    assert_eq!((a.dimensions(), b.dimensions()), ((100, 70), (100, 70)));
    assert!(a != b, "--f16 decoded the f32 picture exactly");
    assert!(psnr(&a, &b) > 40.0, "{} dB", psnr(&a, &b));
}
