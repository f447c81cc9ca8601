//! The `options` dictionary of `KilnGenerator.generate` → a Kiln request.
//!
//! Engine-independent: the Godot glue turns each dictionary entry into a key
//! and an [`OptionValue`] and hands them here, so every rule (known keys, types,
//! ranges) is unit-tested without Godot. Every mistake is an
//! `InvalidArgument` error naming the key, what was expected and what came.
use kiln::image::control::{ControlImage, Preprocess};
use kiln::model::seamless::Seamless;
use kiln::pipeline::control::Control;
use kiln::pipeline::PromptSyntax;
use kiln::{Error, ErrorKind, GenerateRequest, SchedulerKind};

/// One dictionary value, reduced to what the options can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// `null`.
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (GDScript ints are 64-bit).
    Int(i64),
    /// `float` (64-bit in GDScript; `JSON.parse` gives floats for every number).
    Float(f64),
    /// `String` or `StringName`.
    String(String),
    /// `Array`, element by element.
    Array(Vec<OptionValue>),
    /// `Dictionary`, its entries in order (keys as names).
    Dictionary(Vec<(String, OptionValue)>),
    /// An `Image`, its pixels copied out as 8-bit gray, RGB or RGBA.
    Image(ControlImage),
    /// Any other Variant type, by its Godot type name (for the error message).
    Other(String),
}

impl OptionValue {
    fn describe(&self) -> String {
        match self {
            Self::Nil => "null".into(),
            Self::Bool(b) => format!("bool {b}"),
            Self::Int(i) => format!("int {i}"),
            Self::Float(f) => format!("float {f}"),
            Self::String(s) => format!("String {s:?}"),
            Self::Array(a) => format!("Array of {}", a.len()),
            Self::Dictionary(d) => format!("Dictionary of {}", d.len()),
            Self::Image(i) => format!("Image {}x{}", i.width, i.height),
            Self::Other(t) => t.clone(),
        }
    }
}

/// Every key `generate` understands, for the unknown-key message.
pub const KEYS: &[&str] = &[
    "negative_prompt",
    "width",
    "height",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "seed",
    "scheduler",
    "prompt_syntax",
    "clip_skip",
    "seamless",
    "preview_interval",
    "priority",
    "prompt_2",
    "negative_prompt_2",
    "original_width",
    "original_height",
    "crop_top",
    "crop_left",
    "target_width",
    "target_height",
    "negative_original_width",
    "negative_original_height",
    "negative_crop_top",
    "negative_crop_left",
    "negative_target_width",
    "negative_target_height",
    "aesthetic_score",
    "negative_aesthetic_score",
    "controls",
    "guess_mode",
];

/// The keys of one `controls` entry: the C `kiln_control` fields.
pub const CONTROL_KEYS: &[&str] = &["controlnet", "image", "scale", "start", "end", "preprocess", "canny_low", "canny_high"];

/// The SDXL size keys, in `[width, height]` pairs with the request field each sets.
const XL_SIZES: [(&str, &str); 4] = [
    ("original_width", "original_height"),
    ("target_width", "target_height"),
    ("negative_original_width", "negative_original_height"),
    ("negative_target_width", "negative_target_height"),
];

/// A parsed `generate` call: the Kiln request plus how the binding runs it.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// What Kiln generates.
    pub request: GenerateRequest,
    /// Which axes the texture tiles on (a seamless view of the model).
    pub seamless: Seamless,
    /// A preview every this many U-Net calls (0 = none).
    pub preview_interval: u32,
    /// Higher runs first among queued jobs.
    pub priority: i32,
}

fn bad(key: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("options[\"{key}\"]: {what}"))
}

fn int(key: &str, v: &OptionValue) -> Result<i64, Error> {
    match *v {
        OptionValue::Int(i) => Ok(i),
        // JSON-loaded dictionaries hold floats; whole ones are integers.
        OptionValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(bad(key, format!("expected an integer, got {}", v.describe()))),
    }
}

fn int_in(key: &str, v: &OptionValue, min: i64, max: i64) -> Result<i64, Error> {
    let i = int(key, v)?;
    if i < min || i > max {
        return Err(bad(key, format!("{i} is out of range {min}..={max}")));
    }
    Ok(i)
}

fn float(key: &str, v: &OptionValue) -> Result<f64, Error> {
    match *v {
        OptionValue::Float(f) if f.is_finite() => Ok(f),
        OptionValue::Float(f) => Err(bad(key, format!("expected a finite number, got {f}"))),
        OptionValue::Int(i) => Ok(i as f64),
        _ => Err(bad(key, format!("expected a number, got {}", v.describe()))),
    }
}

fn string<'a>(key: &str, v: &'a OptionValue) -> Result<&'a str, Error> {
    match v {
        OptionValue::String(s) => Ok(s),
        _ => Err(bad(key, format!("expected a String, got {}", v.describe()))),
    }
}

/// One `controls` entry (a Dictionary with [`CONTROL_KEYS`]) as a Kiln
/// control; `key` names it in errors (`controls[1]`).
fn control(key: &str, v: &OptionValue) -> Result<Control, Error> {
    let OptionValue::Dictionary(entries) = v else {
        return Err(bad(key, format!("expected a Dictionary with {}, got {}", CONTROL_KEYS.join(", "), v.describe())));
    };
    let (mut net, mut image, mut preprocess) = (None, None, None);
    let mut c = Control::new("", ControlImage { width: 0, height: 0, channels: 0, data: Vec::new() });
    let (mut low, mut high) = (100.0f32, 200.0f32);
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in entries {
        let k = format!("{key}.{name}");
        if seen.contains(&name.as_str()) {
            return Err(bad(&k, "given twice"));
        }
        seen.push(name);
        match name.as_str() {
            "controlnet" => net = Some(string(&k, value)?.to_string()),
            "image" => match value {
                OptionValue::Image(i) => image = Some(i.clone()),
                other => return Err(bad(&k, format!("expected an Image, got {}", other.describe()))),
            },
            "scale" => c.scale = float(&k, value)? as f32,
            "start" => c.start = float(&k, value)? as f32,
            "end" => c.end = float(&k, value)? as f32,
            "preprocess" => {
                let p = string(&k, value)?;
                preprocess = Some(Preprocess::from_name(p).ok_or_else(|| bad(&k, format!("unknown preprocessor {p:?}; one of none, canny, height, tile")))?);
            }
            "canny_low" => low = float(&k, value)? as f32,
            "canny_high" => high = float(&k, value)? as f32,
            _ => return Err(bad(&k, format!("unknown control key; known: {}", CONTROL_KEYS.join(", ")))),
        }
    }
    c.controlnet = net.ok_or_else(|| bad(key, "missing \"controlnet\" (a folder name under the model's controlnet/)"))?;
    c.image = image.ok_or_else(|| bad(key, "missing \"image\" (the control image)"))?;
    c.preprocess = match preprocess.unwrap_or_default() {
        Preprocess::Canny { .. } => Preprocess::Canny { low, high },
        p => p,
    };
    Ok(c)
}

/// Largest side accepted here; Kiln checks the model's own size rules.
const MAX_SIDE: i64 = 16384;

/// Parses `generate(prompt, options)`. Entries are applied in order; a key
/// given twice is an error (a Dictionary cannot hold one twice, so it means
/// `"steps"` and `&"steps"` were both used).
pub fn parse(prompt: &str, entries: &[(String, OptionValue)]) -> Result<GenerateOptions, Error> {
    let mut o = GenerateOptions {
        request: GenerateRequest { prompt: prompt.to_string(), ..Default::default() },
        seamless: Seamless::None,
        preview_interval: 0,
        priority: 0,
    };
    let mut seen: Vec<&str> = Vec::new();
    // SDXL sizes: [width, height] per entry of XL_SIZES, 0 = not given.
    let mut sizes = [[0usize; 2]; 4];
    for (key, value) in entries {
        if seen.contains(&key.as_str()) {
            return Err(bad(key, "given twice"));
        }
        seen.push(key);
        let r = &mut o.request;
        match key.as_str() {
            "negative_prompt" => r.negative_prompt = string(key, value)?.to_string(),
            "width" => r.width = int_in(key, value, 0, MAX_SIDE)? as usize,
            "height" => r.height = int_in(key, value, 0, MAX_SIDE)? as usize,
            "steps" => r.steps = int_in(key, value, 1, 1000)? as usize,
            "guidance_scale" => r.guidance_scale = float(key, value)? as f32,
            "guidance_rescale" => {
                let g = float(key, value)?;
                if !(0.0..=1.0).contains(&g) {
                    return Err(bad(key, format!("{g} is out of range 0..=1")));
                }
                r.guidance_rescale = g as f32;
            }
            "seed" => r.seed = int_in(key, value, 0, i64::MAX)? as u64,
            "scheduler" => {
                let name = string(key, value)?;
                r.scheduler = SchedulerKind::from_name(name).ok_or_else(|| {
                    bad(key, format!("unknown scheduler {name:?}; one of {}", SchedulerKind::NAMES.join(", ")))
                })?;
            }
            "prompt_syntax" => {
                r.prompt_syntax = match string(key, value)? {
                    "plain" => PromptSyntax::Plain,
                    "weighted" => PromptSyntax::Weighted,
                    other => return Err(bad(key, format!("unknown syntax {other:?}; one of plain, weighted"))),
                }
            }
            "clip_skip" => r.clip_skip = int_in(key, value, 0, 64)? as u32,
            "seamless" => {
                let name = string(key, value)?;
                o.seamless = Seamless::from_name(name)
                    .ok_or_else(|| bad(key, format!("unknown axes {name:?}; one of none, x, y, xy")))?;
            }
            "preview_interval" => o.preview_interval = int_in(key, value, 0, u32::MAX as i64)? as u32,
            "priority" => o.priority = int_in(key, value, i32::MIN as i64, i32::MAX as i64)? as i32,
            "prompt_2" => r.prompt_2 = string(key, value)?.to_string(),
            "negative_prompt_2" => r.negative_prompt_2 = string(key, value)?.to_string(),
            "crop_top" => r.xl.crop_top_left[0] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "crop_left" => r.xl.crop_top_left[1] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "negative_crop_top" => r.xl.negative_crop_top_left[0] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "negative_crop_left" => r.xl.negative_crop_top_left[1] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "aesthetic_score" => r.xl.aesthetic_score = float(key, value)? as f32,
            "negative_aesthetic_score" => r.xl.negative_aesthetic_score = float(key, value)? as f32,
            "controls" => {
                let OptionValue::Array(list) = value else {
                    return Err(bad(key, format!("expected an Array of Dictionaries, got {}", value.describe())));
                };
                r.controls = list.iter().enumerate().map(|(i, c)| control(&format!("controls[{i}]"), c)).collect::<Result<_, _>>()?;
            }
            "guess_mode" => match value {
                OptionValue::Bool(b) => r.guess_mode = *b,
                other => return Err(bad(key, format!("expected a bool, got {}", other.describe()))),
            },
            k => match XL_SIZES.iter().position(|(w, h)| k == *w || k == *h) {
                Some(i) => sizes[i][usize::from(k == XL_SIZES[i].1)] = int_in(key, value, 1, MAX_SIDE)? as usize,
                None => return Err(bad(key, format!("unknown option; known: {}", KEYS.join(", ")))),
            },
        }
    }
    let x = &mut o.request.xl;
    let fields = [&mut x.original_size, &mut x.target_size, &mut x.negative_original_size, &mut x.negative_target_size];
    for ((field, [w, h]), (wk, hk)) in fields.into_iter().zip(sizes).zip(XL_SIZES) {
        *field = match (w, h) {
            (0, 0) => None,
            (0, _) => return Err(bad(wk, format!("missing; \"{hk}\" is given and SDXL sizes need both"))),
            (_, 0) => return Err(bad(hk, format!("missing; \"{wk}\" is given and SDXL sizes need both"))),
            (w, h) => Some([w, h]),
        };
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, OptionValue)]) -> Vec<(String, OptionValue)> {
        list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn err(list: &[(&str, OptionValue)]) -> Error {
        parse("p", &entries(list)).expect_err("should be rejected")
    }

    #[test]
    fn empty_options_are_kiln_defaults() {
        let o = parse("mossy stone", &[]).unwrap();
        let d = GenerateRequest::default();
        assert_eq!(o.request.prompt, "mossy stone");
        assert_eq!((o.request.width, o.request.height, o.request.steps, o.request.seed), (d.width, d.height, d.steps, d.seed));
        assert_eq!(o.request.guidance_scale, d.guidance_scale);
        assert_eq!(o.request.scheduler, SchedulerKind::Default);
        assert_eq!((o.seamless, o.preview_interval, o.priority), (Seamless::None, 0, 0));
    }

    #[test]
    fn every_key_reaches_the_request() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                ("negative_prompt", String("blurry".into())),
                ("width", Int(128)),
                ("height", Float(64.0)),
                ("steps", Int(4)),
                ("guidance_scale", Int(3)),
                ("guidance_rescale", Float(0.5)),
                ("seed", Int(42)),
                ("scheduler", String("euler_a".into())),
                ("prompt_syntax", String("weighted".into())),
                ("clip_skip", Int(1)),
                ("seamless", String("xy".into())),
                ("preview_interval", Int(2)),
                ("priority", Int(-3)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert_eq!(r.negative_prompt, "blurry");
        assert_eq!((r.width, r.height, r.steps, r.seed, r.clip_skip), (128, 64, 4, 42, 1));
        assert_eq!((r.guidance_scale, r.guidance_rescale), (3.0, 0.5));
        assert_eq!(r.scheduler, SchedulerKind::EulerA);
        assert_eq!(r.prompt_syntax, PromptSyntax::Weighted);
        assert_eq!((o.seamless, o.preview_interval, o.priority), (Seamless::Xy, 2, -3));
    }

    #[test]
    fn mistakes_name_the_key_and_what_came() {
        use OptionValue::*;
        let cases: Vec<(&str, OptionValue, &str)> = vec![
            ("stpes", Int(4), "unknown option; known: negative_prompt"),
            ("steps", Int(0), "0 is out of range 1..=1000"),
            ("steps", Float(2.5), "expected an integer, got float 2.5"),
            ("steps", String("4".into()), "expected an integer, got String \"4\""),
            ("width", Int(-64), "-64 is out of range 0..=16384"),
            ("seed", Int(-1), "-1 is out of range 0..="),
            ("guidance_scale", Float(f64::NAN), "expected a finite number"),
            ("guidance_scale", Nil, "expected a number, got null"),
            ("guidance_rescale", Float(1.5), "1.5 is out of range 0..=1"),
            ("scheduler", String("eulerr".into()), "unknown scheduler \"eulerr\"; one of default, ddim"),
            ("seamless", Bool(true), "expected a String, got bool true"),
            ("seamless", String("z".into()), "unknown axes \"z\""),
            ("prompt_syntax", String("a1111".into()), "unknown syntax \"a1111\""),
            ("negative_prompt", Other("Vector2".into()), "expected a String, got Vector2"),
            ("priority", Int(1 << 40), "out of range"),
        ];
        for (key, value, want) in cases {
            let e = err(&[(key, value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{key}={value:?}");
            let prefix = format!("options[\"{key}\"]: ");
            assert!(e.message().starts_with(&prefix) && e.message().contains(want), "{key}={value:?}: got {:?}, want {want:?}", e.message());
        }
    }

    #[test]
    fn sdxl_keys_reach_the_request() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                ("prompt_2", String("metal".into())),
                ("negative_prompt_2", String("dark".into())),
                ("original_width", Int(160)),
                ("original_height", Float(128.0)),
                ("crop_top", Int(8)),
                ("crop_left", Int(16)),
                ("target_width", Int(96)),
                ("target_height", Int(64)),
                ("negative_original_width", Int(48)),
                ("negative_original_height", Int(32)),
                ("negative_crop_top", Int(1)),
                ("negative_crop_left", Int(4)),
                ("negative_target_width", Int(80)),
                ("negative_target_height", Int(48)),
                ("aesthetic_score", Float(7.5)),
                ("negative_aesthetic_score", Int(2)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert_eq!((r.prompt_2.as_str(), r.negative_prompt_2.as_str()), ("metal", "dark"));
        let want = kiln::XlConditioning {
            original_size: Some([160, 128]),
            crop_top_left: [8, 16],
            target_size: Some([96, 64]),
            negative_original_size: Some([48, 32]),
            negative_crop_top_left: [1, 4],
            negative_target_size: Some([80, 48]),
            aesthetic_score: 7.5,
            negative_aesthetic_score: 2.0,
        };
        assert_eq!(r.xl, want);
        assert_eq!(parse("p", &[]).unwrap().request.xl, kiln::XlConditioning::default());
        let e = err(&[("original_width", Int(64))]);
        assert_eq!(e.message(), "options[\"original_height\"]: missing; \"original_width\" is given and SDXL sizes need both");
        let e = err(&[("negative_target_height", Int(64))]);
        assert!(e.message().starts_with("options[\"negative_target_width\"]: missing"), "{}", e.message());
        let e = err(&[("target_width", Int(0))]);
        assert!(e.message().contains("0 is out of range 1..=16384"), "{}", e.message());
        let e = err(&[("aesthetic_score", Float(f64::INFINITY))]);
        assert!(e.message().contains("expected a finite number"), "{}", e.message());
    }

    fn gray(width: usize, height: usize) -> ControlImage {
        ControlImage { width, height, channels: 1, data: vec![128; width * height] }
    }

    fn control_entry(list: &[(&str, OptionValue)]) -> OptionValue {
        OptionValue::Dictionary(entries(list))
    }

    #[test]
    fn controls_mirror_kiln_control() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                (
                    "controls",
                    Array(vec![
                        control_entry(&[
                            ("controlnet", String("canny".into())),
                            ("image", Image(gray(64, 32))),
                            ("scale", Float(0.8)),
                            ("start", Float(0.1)),
                            ("end", Int(1)),
                            ("preprocess", String("canny".into())),
                            ("canny_low", Int(50)),
                            ("canny_high", Float(150.0)),
                        ]),
                        control_entry(&[("controlnet", String("tile".into())), ("image", Image(gray(8, 8))), ("preprocess", String("tile".into()))]),
                    ]),
                ),
                ("guess_mode", Bool(true)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert!(r.guess_mode);
        assert_eq!(r.controls.len(), 2);
        let (a, b) = (&r.controls[0], &r.controls[1]);
        assert_eq!((a.controlnet.as_str(), a.image.width, a.image.height, a.image.channels), ("canny", 64, 32, 1));
        assert_eq!((a.scale, a.start, a.end), (0.8, 0.1, 1.0));
        assert_eq!(a.preprocess, Preprocess::Canny { low: 50.0, high: 150.0 });
        // Defaults are kiln_control_init's.
        let d = Control::new("tile", gray(8, 8));
        assert_eq!((b.controlnet.as_str(), b.scale, b.start, b.end, b.preprocess), ("tile", d.scale, d.start, d.end, Preprocess::Tile));
        let plain = parse("p", &entries(&[("controls", Array(vec![control_entry(&[("controlnet", String("x".into())), ("image", Image(gray(8, 8))), ("preprocess", String("canny".into()))])]))])).unwrap();
        assert_eq!(plain.request.controls[0].preprocess, Preprocess::Canny { low: 100.0, high: 200.0 });
        assert!(parse("p", &[]).unwrap().request.controls.is_empty());
    }

    #[test]
    fn control_mistakes_name_the_entry_and_key() {
        use OptionValue::*;
        let good = || vec![("controlnet", String("tiny".into())), ("image", Image(gray(8, 8)))];
        let with = |extra: (&str, OptionValue)| {
            let mut list = good();
            list.push(extra);
            Array(vec![control_entry(&good()), control_entry(&list)])
        };
        let cases: Vec<(OptionValue, &str)> = vec![
            (Int(3), "options[\"controls\"]: expected an Array of Dictionaries, got int 3"),
            (Array(vec![String("tiny".into())]), "options[\"controls[0]\"]: expected a Dictionary with controlnet, image"),
            (Array(vec![control_entry(&[("image", Image(gray(8, 8)))])]), "options[\"controls[0]\"]: missing \"controlnet\""),
            (Array(vec![control_entry(&[("controlnet", String("tiny".into()))])]), "options[\"controls[0]\"]: missing \"image\""),
            (with(("scle", Float(1.0))), "options[\"controls[1].scle\"]: unknown control key; known: controlnet, image, scale"),
            (with(("preprocess", String("depthmap".into()))), "options[\"controls[1].preprocess\"]: unknown preprocessor \"depthmap\""),
            (with(("scale", String("1".into()))), "options[\"controls[1].scale\"]: expected a number, got String \"1\""),
            (with(("end", Float(f64::NAN))), "options[\"controls[1].end\"]: expected a finite number"),
            (with(("image", Image(gray(8, 8)))), "options[\"controls[1].image\"]: given twice"),
            (Array(vec![control_entry(&[("controlnet", String("tiny".into())), ("image", String("edges.png".into()))])]), "options[\"controls[0].image\"]: expected an Image, got String"),
        ];
        for (value, want) in cases {
            let e = err(&[("controls", value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{value:?}");
            assert!(e.message().starts_with(want), "{value:?}: got {:?}, want {want:?}", e.message());
        }
        let e = err(&[("guess_mode", Int(1))]);
        assert_eq!(e.message(), "options[\"guess_mode\"]: expected a bool, got int 1");
    }

    #[test]
    fn a_key_given_twice_is_rejected() {
        let e = err(&[("steps", OptionValue::Int(4)), ("steps", OptionValue::Int(5))]);
        assert_eq!(e.message(), "options[\"steps\"]: given twice");
    }
}
