//! Pictures with an embedded ICC profile (Display P3 from phones, Adobe RGB from cameras)
//! turned into sRGB before they are coded: the VAE learned sRGB pictures, and a decoded
//! picture carries no profile, so every viewer shows it as sRGB. Without this, such a
//! photo would come back duller than it went in.

use image::RgbImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, ProfileText, TransformOptions};

/// What became of a picture's colours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Colours {
    /// No profile, or one that maps every colour to itself in sRGB: pixels untouched.
    Srgb,
    /// Converted to sRGB from the profile of this name.
    Converted(String),
    /// A profile that could not be used (why): the pixels are taken as sRGB.
    Ignored(String),
}

/// Converts `rgb` from the colours of `icc` to sRGB. Colours sRGB cannot show are
/// clipped (Display P3 and Adobe RGB profiles are matrices, with no perceptual tables to
/// compress them).
pub fn to_srgb(rgb: &mut RgbImage, icc: &[u8]) -> Colours {
    let profile = match ColorProfile::new_from_slice(icc) {
        Ok(p) => p,
        Err(e) => return Colours::Ignored(format!("its ICC profile is unreadable ({e})")),
    };
    if profile.color_space != DataColorSpace::Rgb {
        return Colours::Ignored(format!(
            "its ICC profile is for {:?}, not RGB, pixels",
            profile.color_space
        ));
    }
    let transform = match profile.create_transform_8bit(
        Layout::Rgb,
        &ColorProfile::new_srgb(),
        Layout::Rgb,
        TransformOptions::default(),
    ) {
        Ok(t) => t,
        Err(e) => return Colours::Ignored(format!("its ICC profile cannot be applied ({e})")),
    };
    // Many cameras and editors embed sRGB itself: leave those pixels bit for bit as they
    // are rather than take a transform's rounding.
    let levels: Vec<u8> = (0..=255u8).step_by(17).collect();
    let mut probe = Vec::with_capacity(3 * levels.len().pow(3));
    for &r in &levels {
        for &g in &levels {
            for &b in &levels {
                probe.extend([r, g, b]);
            }
        }
    }
    let mut mapped = vec![0u8; probe.len()];
    if let Err(e) = transform.transform(&probe, &mut mapped) {
        return Colours::Ignored(format!("its ICC profile cannot be applied ({e})"));
    }
    if probe.iter().zip(&mapped).all(|(a, b)| a.abs_diff(*b) <= 1) {
        return Colours::Srgb;
    }
    let source = rgb.as_raw().clone();
    if let Err(e) = transform.transform(&source, rgb) {
        return Colours::Ignored(format!("its ICC profile cannot be applied ({e})"));
    }
    Colours::Converted(name(&profile))
}

fn name(profile: &ColorProfile) -> String {
    let text = match &profile.description {
        Some(ProfileText::PlainString(s)) => s.clone(),
        Some(ProfileText::Localizable(strings)) => {
            strings.first().map(|s| s.value.clone()).unwrap_or_default()
        }
        Some(ProfileText::Description(d)) => d.ascii_string.clone(),
        None => String::new(),
    };
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.is_empty() {
        "an unnamed ICC profile".into()
    } else {
        format!("ICC profile '{text}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sRGB's transfer function and its inverse.
    fn decode(v: f64) -> f64 {
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    }

    fn encode(v: f64) -> f64 {
        if v <= 0.0031308 {
            v * 12.92
        } else {
            1.055 * v.powf(1.0 / 2.4) - 0.055
        }
    }

    /// Display P3 → sRGB by the published linear-light matrix (both share sRGB's
    /// transfer function): the oracle, independent of the CMS.
    fn p3_to_srgb(p: [u8; 3]) -> [f64; 3] {
        const M: [[f64; 3]; 3] = [
            [1.2249, -0.2247, 0.0],
            [-0.0420, 1.0419, 0.0],
            [-0.0197, -0.0786, 1.0979],
        ];
        let lin = p.map(|v| decode(f64::from(v) / 255.0));
        M.map(|row| encode((0..3).map(|i| row[i] * lin[i]).sum::<f64>().clamp(0.0, 1.0)) * 255.0)
    }

    fn picture(pixels: &[[u8; 3]]) -> RgbImage {
        RgbImage::from_fn(pixels.len() as u32, 1, |x, _| {
            image::Rgb(pixels[x as usize])
        })
    }

    #[test]
    fn display_p3_becomes_srgb() {
        // Colours inside both gamuts, where the matrix alone decides.
        let p3 = [
            [128, 128, 128],
            [200, 120, 90],
            [60, 140, 200],
            [90, 160, 70],
            [230, 210, 190],
        ];
        let mut rgb = picture(&p3);
        let icc = ColorProfile::new_display_p3().encode().unwrap();
        let colours = to_srgb(&mut rgb, &icc);
        assert!(matches!(colours, Colours::Converted(_)), "{colours:?}");
        for (x, p) in p3.iter().enumerate() {
            let got = rgb.get_pixel(x as u32, 0).0;
            let want = p3_to_srgb(*p);
            for c in 0..3 {
                assert!(
                    (f64::from(got[c]) - want[c]).abs() <= 2.0,
                    "P3 {p:?} → {got:?}, expected {want:?}"
                );
            }
        }
        // Greys stay grey, and a saturated P3 colour grows more saturated in sRGB.
        assert_eq!(rgb.get_pixel(0, 0).0, [128, 128, 128]);
        assert!(rgb.get_pixel(1, 0)[0] > 200 && rgb.get_pixel(1, 0)[2] < 90);
    }

    #[test]
    fn srgb_and_unusable_profiles_leave_the_pixels_alone() {
        let pixels = [[1, 2, 3], [200, 120, 90], [255, 0, 255]];
        let srgb = ColorProfile::new_srgb().encode().unwrap();
        let mut rgb = picture(&pixels);
        assert_eq!(to_srgb(&mut rgb, &srgb), Colours::Srgb);
        assert!(rgb == picture(&pixels));
        for junk in [&b"not a profile"[..], &srgb[..100]] {
            let colours = to_srgb(&mut rgb, junk);
            assert!(matches!(colours, Colours::Ignored(_)), "{colours:?}");
            assert!(rgb == picture(&pixels));
        }
    }
}
