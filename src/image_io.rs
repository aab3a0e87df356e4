//! Pictures in and out: any size in (padded to the model's multiple), PNG, JPEG or WebP
//! out (cropped back). Pixels travel as planar RGB f32 in [-1, 1], as the VAE expects.

use std::path::Path;

use image::ImageDecoder;

use crate::error::{Error, Result};
use crate::icc::to_srgb;
pub use crate::icc::Colours;

/// A planar RGB image in [-1, 1].
#[derive(Clone, Debug)]
pub struct Planar {
    pub width: usize,
    pub height: usize,
    /// [3, height, width].
    pub data: Vec<f32>,
}

/// How the border is extended when an image is padded to the model's multiple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Padding {
    /// Repeat the edge pixels.
    #[default]
    Edge,
    /// Mirror the image at its edges (without repeating the edge pixel).
    Reflect,
}

/// Reads PNG, JPEG or WebP as 8-bit sRGB, turned upright as its EXIF orientation says
/// and in the colours its ICC profile says (as viewers show it; cameras store many photos
/// sideways, phones in Display P3). A picture wider or taller than the `.oscar` format
/// holds is refused from its header, before anything is decoded.
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    Ok(read_picture(path)?.rgb)
}

/// A picture as [`read_rgb`] reads it, and what reading it changed.
pub struct Picture {
    pub rgb: image::RgbImage,
    /// It had an alpha channel, which RGB drops.
    pub had_alpha: bool,
    /// It is an animation (APNG, animated WebP), of which this is the first picture.
    pub animated: bool,
    pub colours: Colours,
}

/// [`read_rgb`], with what it changed.
pub fn read_picture(path: &Path) -> Result<Picture> {
    let max_side = crate::codec::MAX_DIM;
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let open = || {
        let reader = image::ImageReader::open(path).and_then(|r| r.with_guessed_format());
        reader.map_err(|e| bad(e.to_string()))
    };
    let (w, h) = open()?.into_dimensions().map_err(|e| bad(e.to_string()))?;
    if w > max_side || h > max_side {
        return Err(bad(format!(
            "{w}×{h} exceeds the format's {max_side} pixels per side"
        )));
    }
    // Room for the picture as 16-bit RGBA: the decoder's default cap of 512 MiB would
    // refuse sizes the format holds.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(8 * u64::from(w) * u64::from(h) + (64 << 20));
    let mut reader = open()?;
    reader.limits(limits);
    let decoded = || -> image::ImageResult<(image::DynamicImage, Option<Vec<u8>>)> {
        let mut decoder = reader.into_decoder()?;
        let orientation = decoder.orientation()?;
        let icc = decoder.icc_profile()?;
        let mut img = image::DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok((img, icc))
    };
    let (img, icc) = decoded().map_err(|e| bad(e.to_string()))?;
    let mut rgb = img.to_rgb8();
    let colours = match icc {
        Some(icc) => to_srgb(&mut rgb, &icc),
        None => Colours::Srgb,
    };
    Ok(Picture {
        rgb,
        had_alpha: img.color().has_alpha(),
        animated: is_animated(path, open()?.format()),
        colours,
    })
}

/// Whether the file at `path`, of `format`, is an animation. The decoders give its first
/// picture (or, for an APNG, its default image) without a word.
fn is_animated(path: &Path, format: Option<image::ImageFormat>) -> bool {
    let reader = || std::fs::File::open(path).map(std::io::BufReader::new).ok();
    match format {
        Some(image::ImageFormat::Png) => reader()
            .and_then(|r| image::codecs::png::PngDecoder::new(r).ok())
            .is_some_and(|d| d.is_apng().unwrap_or(false)),
        Some(image::ImageFormat::WebP) => reader()
            .and_then(|r| image::codecs::webp::WebPDecoder::new(r).ok())
            .is_some_and(|d| d.has_animation()),
        _ => false,
    }
}

/// `img` as planar [-1, 1], padded right and bottom to multiples of `multiple`.
pub fn to_planar(img: &image::RgbImage, multiple: usize, padding: Padding) -> Planar {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (pw, ph) = (w.next_multiple_of(multiple), h.next_multiple_of(multiple));
    let source = |i: usize, n: usize| -> usize {
        if i < n {
            return i;
        }
        match padding {
            Padding::Edge => n - 1,
            // Reflection of a pad wider than the image folds back and forth.
            Padding::Reflect if n > 1 => {
                let period = 2 * (n - 1);
                let k = i % period;
                if k < n {
                    k
                } else {
                    period - k
                }
            }
            Padding::Reflect => 0,
        }
    };
    let mut data = vec![0f32; 3 * ph * pw];
    for y in 0..ph {
        for x in 0..pw {
            let p = img.get_pixel(source(x, w) as u32, source(y, h) as u32).0;
            for c in 0..3 {
                data[(c * ph + y) * pw + x] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Planar {
        width: pw,
        height: ph,
        data,
    }
}

/// Planar [-1, 1] → 8-bit RGB, cropped to `width` × `height` from the top left.
pub fn to_rgb8(img: &Planar, width: usize, height: usize) -> image::RgbImage {
    let (w, h) = (img.width, img.height);
    image::RgbImage::from_fn(width.min(w) as u32, height.min(h) as u32, |x, y| {
        let px = |c: usize| {
            let v = img.data[(c * h + y as usize) * w + x as usize];
            ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round_ties_even() as u8
        };
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// The extensions `encode` reads pictures from, in lower case.
pub const PICTURE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// `path`'s extension in lower case, if it has one in UTF-8.
pub fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// What `decode` writes, by the output's extension: a `.jpg` holds a JPEG, never a PNG
/// under another name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    /// At quality 95: the codec's own loss is far larger.
    Jpeg,
    /// Lossless.
    WebP,
}

impl OutputFormat {
    /// `.png`, `.jpg` / `.jpeg` or `.webp` (any case); other extensions are refused.
    pub fn for_path(path: &Path) -> Result<Self> {
        match extension(path).as_deref() {
            Some("png") => Ok(Self::Png),
            Some("jpg" | "jpeg") => Ok(Self::Jpeg),
            Some("webp") => Ok(Self::WebP),
            _ => Err(Error::Output {
                path: path.to_path_buf(),
                reason: "pictures are written as .png, .jpg, .jpeg or .webp".into(),
            }),
        }
    }

    /// The file's bytes.
    pub fn encode(self, rgb: &image::RgbImage) -> image::ImageResult<Vec<u8>> {
        let mut bytes = Vec::new();
        let (w, h) = rgb.dimensions();
        match self {
            Self::Png => rgb.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )?,
            Self::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .encode_image(rgb)?,
            Self::WebP => image::codecs::webp::WebPEncoder::new_lossless(&mut bytes).encode(
                rgb.as_raw(),
                w,
                h,
                image::ExtendedColorType::Rgb8,
            )?,
        }
        Ok(bytes)
    }
}

/// Peak signal-to-noise ratio of two 8-bit images of the same size, in dB.
pub fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.as_raw().len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_past_the_decoders_default_cap_are_read() {
        // 14000² RGB is 588 MB: over the image crate's default cap of 512 MiB, within the
        // format's 16384 pixels per side.
        let path = std::env::temp_dir().join(format!("oscar-wgpu-big-{}.png", std::process::id()));
        image::RgbImage::new(14000, 14000).save(&path).unwrap();
        let read = read_rgb(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read.unwrap().dimensions(), (14000, 14000));
    }

    /// An input that cannot even be opened is named: in a folder of pictures, a bare
    /// "No such file or directory" does not say which one.
    #[test]
    fn pictures_that_cannot_be_opened_are_named() {
        let missing = std::env::temp_dir().join("oscar-wgpu-no-such-picture.png");
        let folder = std::env::temp_dir();
        for path in [&missing, &folder] {
            let message = read_picture(path).err().expect("an error").to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    /// An APNG (a PNG with an animation-control chunk) is read as its default image and
    /// said to be an animation, so that encode can warn that the rest is dropped.
    #[test]
    fn animations_are_told_apart() {
        let dir = std::env::temp_dir();
        let still = dir.join(format!("oscar-wgpu-still-{}.png", std::process::id()));
        image::RgbImage::from_pixel(8, 8, image::Rgb([9, 99, 199]))
            .save(&still)
            .unwrap();
        let png = std::fs::read(&still).unwrap();
        // acTL (1 frame, looping forever) right after the 33-byte signature and IHDR.
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let crc = crc32(&[&kind[..], data].concat());
            [
                &(data.len() as u32).to_be_bytes()[..],
                kind,
                data,
                &crc.to_be_bytes(),
            ]
            .concat()
        };
        let actl = chunk(b"acTL", &[0, 0, 0, 1, 0, 0, 0, 0]);
        let animated = dir.join(format!("oscar-wgpu-animated-{}.png", std::process::id()));
        std::fs::write(&animated, [&png[..33], &actl, &png[33..]].concat()).unwrap();
        let (still_read, animated_read) = (read_picture(&still), read_picture(&animated));
        std::fs::remove_file(&still).unwrap();
        std::fs::remove_file(&animated).unwrap();
        let (still_read, animated_read) = (still_read.ok().unwrap(), animated_read.ok().unwrap());
        assert!(!still_read.animated && animated_read.animated);
        assert_eq!(animated_read.rgb, still_read.rgb);
    }

    /// PNG's CRC-32 (polynomial 0xEDB88320, bit by bit).
    fn crc32(bytes: &[u8]) -> u32 {
        !bytes.iter().fold(!0u32, |crc, &b| {
            (0..8).fold(crc ^ u32::from(b), |c, _| {
                (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg())
            })
        })
    }

    #[test]
    fn photos_are_turned_upright() {
        // 16×8 stored, red left and blue right, EXIF orientation 6 (turn 90° clockwise to
        // view); written by PIL. Upright it is 8×16, red on top.
        let fixture = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/orientation_6.jpg"
        );
        let img = read_rgb(Path::new(fixture)).unwrap();
        assert_eq!(img.dimensions(), (8, 16));
        assert!(!read_picture(Path::new(fixture)).unwrap().had_alpha);
        let (top, bottom) = (img.get_pixel(4, 2), img.get_pixel(4, 13));
        assert!(top[0] > 200 && top[2] < 60, "{top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
    }

    #[test]
    fn outputs_take_the_format_their_extension_names() {
        let photo = read_rgb(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/astronaut_256.png"
        )))
        .unwrap();
        for (name, format, lossless) in [
            ("a.png", image::ImageFormat::Png, true),
            ("a.JPG", image::ImageFormat::Jpeg, false),
            ("a.jpeg", image::ImageFormat::Jpeg, false),
            ("a.webp", image::ImageFormat::WebP, true),
        ] {
            let bytes = OutputFormat::for_path(Path::new(name))
                .unwrap()
                .encode(&photo)
                .unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), format, "{name}");
            let back = image::load_from_memory(&bytes).unwrap().to_rgb8();
            if lossless {
                assert!(back == photo, "{name} is lossless");
            } else {
                assert!(
                    psnr(&back, &photo) > 35.0,
                    "{name}: {} dB",
                    psnr(&back, &photo)
                );
            }
        }
        for name in ["a.bmp", "a", "a.oscar"] {
            assert!(OutputFormat::for_path(Path::new(name)).is_err(), "{name}");
        }
    }

    #[test]
    fn padding_repeats_or_mirrors_the_edges() {
        // 3 × 2 pixels whose red numbers them (10·row + column), padded to 8 × 8: wider
        // than the picture, so a reflection folds back and forth (as numpy's "reflect").
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([(10 * y + x) as u8, 0, 255]));
        for (padding, columns, rows) in [
            (
                Padding::Edge,
                [0, 1, 2, 2, 2, 2, 2, 2],
                [0, 1, 1, 1, 1, 1, 1, 1],
            ),
            (
                Padding::Reflect,
                [0, 1, 2, 1, 0, 1, 2, 1],
                [0, 1, 0, 1, 0, 1, 0, 1],
            ),
        ] {
            let planar = to_planar(&img, 8, padding);
            assert_eq!((planar.width, planar.height), (8, 8));
            let back = to_rgb8(&planar, 8, 8);
            for (y, row) in rows.iter().enumerate() {
                for (x, column) in columns.iter().enumerate() {
                    let want = [(10 * row + column) as u8, 0, 255];
                    assert_eq!(
                        back.get_pixel(x as u32, y as u32).0,
                        want,
                        "{padding:?} ({x}, {y})"
                    );
                }
            }
            // Cropped back to the picture, it is the picture.
            assert!(to_rgb8(&planar, 3, 2) == img, "{padding:?}");
        }
        // One pixel has nothing to mirror: both repeat it.
        let dot = image::RgbImage::from_pixel(1, 1, image::Rgb([7, 8, 9]));
        for padding in [Padding::Edge, Padding::Reflect] {
            let back = to_rgb8(&to_planar(&dot, 4, padding), 4, 4);
            assert!(back.pixels().all(|p| p.0 == [7, 8, 9]), "{padding:?}");
        }
    }
}
