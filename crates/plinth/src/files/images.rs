//! What a file's bytes are, and images made from them. The type is read from the bytes (their
//! magic numbers), never taken from the client. Images are decoded with limits on their sides
//! and on the memory a decode may take, so a decompression bomb is refused, not rendered.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

/// Longest side of an image the server decodes.
pub const SOURCE_MAX_SIDE: u32 = 16_384;
/// Most pixels of an image the server decodes (a 64-megapixel photo).
pub const SOURCE_MAX_PIXELS: u64 = 64 * 1024 * 1024;
/// Most memory one decode may take.
const DECODE_MAX_ALLOC: u64 = 512 * 1024 * 1024;
/// Longest side of a variant (the contract's image transform limit).
pub const VARIANT_MAX_SIDE: u32 = 4_096;

/// Types whose text the server accepts as declared (bytes that are valid UTF-8).
const TEXT_TYPES: &[&str] =
    &["application/json", "application/xml", "application/yaml", "application/x-ndjson", "image/svg+xml"];

/// The four image types variants are made from.
pub fn is_raster(mime: &str) -> bool {
    matches!(mime, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// True for a bare media type, `type/subtype` in RFC 6838's characters (no parameters).
pub fn is_media_type(text: &str) -> bool {
    let name = |part: &str| {
        (1..=127).contains(&part.len())
            && part.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    text.split_once('/').is_some_and(|(kind, sub)| name(kind) && name(sub))
}

/// A declared type in its canonical spelling: lower case, no parameters, the usual aliases.
pub fn canonical(mime: &str) -> String {
    let base = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match base.as_str() {
        "image/jpg" | "image/pjpeg" => "image/jpeg".into(),
        "application/x-pdf" => "application/pdf".into(),
        "application/x-zip-compressed" => "application/zip".into(),
        _ => base,
    }
}

/// The type of `bytes` (their head is enough), given what the client declared (`None` or
/// `application/octet-stream` for nothing): the sniffed type when the bytes have a signature,
/// and a declared type they contradict is refused; bytes without one take a declared text type
/// when they are text, else `text/plain` or `application/octet-stream`.
pub fn resolve_type(head: &[u8], declared: Option<&str>, complete: bool) -> Result<String, String> {
    let declared = declared.map(canonical).filter(|d| !d.is_empty() && d != "application/octet-stream");
    if let Some(kind) = infer::get(head) {
        let sniffed = canonical(kind.mime_type());
        return match declared {
            Some(declared) if declared != sniffed && !compatible(&declared, &sniffed) => {
                Err(format!("the bytes are `{sniffed}`, not the declared `{declared}`"))
            }
            _ => Ok(sniffed),
        };
    }
    // A type the bytes would show had they been of it (an image, a PDF, an archive).
    if let Some(declared) = &declared {
        if infer::is_mime_supported(declared) && declared != "text/plain" {
            return Err(format!("the bytes are not `{declared}`"));
        }
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut at the end of the head.
        Err(e) => !complete && e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    match declared {
        Some(declared) if text && (declared.starts_with("text/") || TEXT_TYPES.contains(&declared.as_str())) => {
            Ok(declared)
        }
        Some(declared) if !text && (declared.starts_with("text/") || TEXT_TYPES.contains(&declared.as_str())) => {
            Err(format!("the bytes are not text, as the declared `{declared}` would be"))
        }
        // Other types the server cannot check are kept as bytes.
        Some(_) | None if !text => Ok("application/octet-stream".into()),
        Some(_) | None => Ok("text/plain".into()),
    }
}

/// Declared and sniffed types that name the same bytes (a `.docx` is a zip, say).
fn compatible(declared: &str, sniffed: &str) -> bool {
    sniffed == "application/zip"
        && (declared.starts_with("application/vnd.openxmlformats") || declared == "application/epub+zip")
}

fn format_of(mime: &str) -> Option<ImageFormat> {
    match mime {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The sides of an image of type `mime`, read from its header, refused past the limits: `None`
/// for a type that is not a raster image.
pub fn dimensions(bytes: &[u8], mime: &str) -> Result<Option<(u32, u32)>, String> {
    let Some(format) = format_of(mime) else { return Ok(None) };
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader.into_dimensions().map_err(|e| format!("the image cannot be read: {e}"))?;
    check_sides(width, height)?;
    Ok(Some((width, height)))
}

fn check_sides(width: u32, height: u32) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err("the image has no pixels".into());
    }
    if width > SOURCE_MAX_SIDE || height > SOURCE_MAX_SIDE || u64::from(width) * u64::from(height) > SOURCE_MAX_PIXELS {
        return Err(format!(
            "the image is {width}x{height}: images are at most {SOURCE_MAX_SIDE} px a side and {} megapixels",
            SOURCE_MAX_PIXELS / 1024 / 1024
        ));
    }
    Ok(())
}

/// The names `Fit::parse` takes.
pub const FITS: &[&str] = &["contain", "inside", "scale-down", "cover", "crop", "fill"];
/// The names `Output::parse` takes.
pub const OUTPUTS: &[&str] = &["jpeg", "jpg", "png", "webp", "gif"];

/// How a variant fits its box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Within the box, the aspect kept (the default).
    Contain,
    /// Fills the box, the aspect kept, the overflow cropped from the middle.
    Cover,
    /// Exactly the box, stretched.
    Fill,
}

impl Fit {
    pub fn parse(text: &str) -> Option<Fit> {
        match text {
            "contain" | "inside" | "scale-down" => Some(Fit::Contain),
            "cover" | "crop" => Some(Fit::Cover),
            "fill" => Some(Fit::Fill),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Fill => "fill",
        }
    }
}

/// A variant's output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl Output {
    pub fn parse(text: &str) -> Option<Output> {
        match text {
            "jpeg" | "jpg" => Some(Output::Jpeg),
            "png" => Some(Output::Png),
            "webp" => Some(Output::Webp),
            "gif" => Some(Output::Gif),
            _ => None,
        }
    }

    /// The format of a source of type `mime`, for a variant that names none.
    pub fn of(mime: &str) -> Output {
        match mime {
            "image/png" => Output::Png,
            "image/gif" => Output::Gif,
            "image/webp" => Output::Webp,
            _ => Output::Jpeg,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Output::Jpeg => "jpeg",
            Output::Png => "png",
            Output::Webp => "webp",
            Output::Gif => "gif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Output::Jpeg => "image/jpeg",
            Output::Png => "image/png",
            Output::Webp => "image/webp",
            Output::Gif => "image/gif",
        }
    }
}

/// A variant asked for: the box (a missing side follows the aspect), the fit and the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub output: Output,
}

impl Spec {
    /// The name its rendering is cached under, beside the version's bytes.
    pub fn cache_name(&self) -> String {
        let side = |s: Option<u32>| s.map_or_else(|| "auto".to_string(), |s| s.to_string());
        format!("{}x{}-{}.{}", side(self.width), side(self.height), self.fit.name(), self.output.extension())
    }
}

/// Why a variant was not made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The source cannot be decoded within the limits, or is no image.
    #[error("{0}")]
    Source(String),
    #[error("encoding the variant failed: {0}")]
    Encode(String),
}

/// Renders `spec` of the image `bytes` of type `mime` (CPU work: call it off the async threads).
pub fn render(bytes: &[u8], mime: &str, spec: &Spec) -> Result<Vec<u8>, RenderError> {
    let format = format_of(mime)
        .ok_or_else(|| RenderError::Source("variants are made of PNG, JPEG, GIF and WebP images".into()))?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(SOURCE_MAX_SIDE);
    limits.max_image_height = Some(SOURCE_MAX_SIDE);
    limits.max_alloc = Some(DECODE_MAX_ALLOC);
    reader.limits(limits);
    let source = reader.decode().map_err(|e| RenderError::Source(format!("the image cannot be decoded: {e}")))?;
    check_sides(source.width(), source.height()).map_err(RenderError::Source)?;
    let resized = resize(&source, spec);
    encode(resized, spec.output)
}

/// The box of `spec` for a source of `width` x `height`: a missing side follows the aspect.
pub fn target(width: u32, height: u32, spec: &Spec) -> (u32, u32) {
    let scale =
        |side: u32, from: u32, to: u32| ((u64::from(side) * u64::from(to)) / u64::from(from).max(1)).max(1) as u32;
    match (spec.width, spec.height) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => (w, scale(height, width, w).min(VARIANT_MAX_SIDE)),
        (None, Some(h)) => (scale(width, height, h).min(VARIANT_MAX_SIDE), h),
        (None, None) => (width.min(VARIANT_MAX_SIDE), height.min(VARIANT_MAX_SIDE)),
    }
}

fn resize(source: &DynamicImage, spec: &Spec) -> DynamicImage {
    use image::imageops::FilterType;
    let (w, h) = target(source.width(), source.height(), spec);
    let filter = FilterType::Triangle;
    match spec.fit {
        Fit::Contain if spec.width.is_none() || spec.height.is_none() => source.resize_exact(w, h, filter),
        Fit::Contain => source.resize(w, h, filter),
        Fit::Cover => source.resize_to_fill(w, h, filter),
        Fit::Fill => source.resize_exact(w, h, filter),
    }
}

fn encode(image: DynamicImage, output: Output) -> Result<Vec<u8>, RenderError> {
    let mut out = Cursor::new(Vec::new());
    let failed = |e: image::ImageError| RenderError::Encode(e.to_string());
    match output {
        Output::Jpeg => {
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82);
            DynamicImage::ImageRgb8(image.to_rgb8()).write_with_encoder(encoder).map_err(failed)?;
        }
        Output::Png => image.write_to(&mut out, ImageFormat::Png).map_err(failed)?,
        Output::Webp => {
            let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            DynamicImage::ImageRgba8(image.to_rgba8()).write_with_encoder(encoder).map_err(failed)?;
        }
        Output::Gif => {
            DynamicImage::ImageRgba8(image.to_rgba8()).write_to(&mut out, ImageFormat::Gif).map_err(failed)?
        }
    }
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::new_rgb8(width, height);
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_type_is_read_from_the_bytes_and_a_contradicting_declaration_refused() {
        let image = png(2, 2);
        assert_eq!(resolve_type(&image, None, true).unwrap(), "image/png");
        assert_eq!(resolve_type(&image, Some("image/png; charset=x"), true).unwrap(), "image/png");
        assert!(resolve_type(&image, Some("image/jpeg"), true).is_err());
        assert!(resolve_type(b"hello", Some("image/png"), true).is_err());
        assert_eq!(resolve_type(b"a,b\n1,2\n", Some("text/csv"), true).unwrap(), "text/csv");
        assert_eq!(resolve_type(b"{\"a\":1}", Some("application/json"), true).unwrap(), "application/json");
        assert_eq!(resolve_type(b"hello", None, true).unwrap(), "text/plain");
        assert_eq!(resolve_type(&[0, 159, 146, 150], None, true).unwrap(), "application/octet-stream");
        assert!(resolve_type(&[0, 159, 146, 150], Some("text/plain"), true).is_err());
        assert_eq!(
            resolve_type(&[0, 159, 146, 150], Some("application/x-custom"), true).unwrap(),
            "application/octet-stream"
        );
    }

    #[test]
    fn sides_past_the_limits_are_refused_from_the_header() {
        assert_eq!(dimensions(&png(3, 5), "image/png").unwrap(), Some((3, 5)));
        assert_eq!(dimensions(b"text", "text/plain").unwrap(), None);
        assert!(check_sides(SOURCE_MAX_SIDE + 1, 1).is_err());
        assert!(check_sides(10_000, 10_000).is_err());
        assert!(check_sides(0, 5).is_err());
    }

    #[test]
    fn a_box_missing_a_side_keeps_the_aspect() {
        let spec = |w, h, fit| Spec { width: w, height: h, fit, output: Output::Png };
        assert_eq!(target(400, 200, &spec(Some(100), None, Fit::Contain)), (100, 50));
        assert_eq!(target(400, 200, &spec(None, Some(100), Fit::Contain)), (200, 100));
        let rendered = render(&png(400, 200), "image/png", &spec(Some(100), Some(100), Fit::Cover)).unwrap();
        assert_eq!(dimensions(&rendered, "image/png").unwrap(), Some((100, 100)));
        let rendered = render(&png(400, 200), "image/png", &spec(Some(100), Some(100), Fit::Contain)).unwrap();
        assert_eq!(dimensions(&rendered, "image/png").unwrap(), Some((100, 50)));
    }
}
