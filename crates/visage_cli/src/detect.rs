//! `visage detect`: runs the perception networks on one photo and reports what they found.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use image::{Rgb, RgbImage};
use serde_json::json;
use visage_core::perception::FaceDetectorMode;
use visage_core::perception::{LandmarkCheck, Perception, PerceptionOptions};
use visage_core::photo::{IngestOptions, Photo};

use crate::emit;

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

/// Runs the command; errors are one sentence.
pub fn run(
    photo_path: &Path,
    as_json: bool,
    overlay: Option<&Path>,
    full_range: bool,
) -> Result<(), String> {
    let photo = Photo::open(photo_path, &IngestOptions::default()).map_err(|e| e.to_string())?;
    let options = PerceptionOptions {
        detector: if full_range {
            FaceDetectorMode::FullRange
        } else {
            FaceDetectorMode::Auto
        },
        ..PerceptionOptions::default()
    };
    let nets = visage_core::perception::default_nets_dir();
    let perception = Perception::load(&nets, options).map_err(|e| e.to_string())?;
    let found = perception.run_photo(&photo).map_err(|e| e.to_string())?;

    // Coordinates are reported in the pixels of the original (upright) photo.
    let orig = |p: [f32; 2]| {
        let q = photo.to_original([p[0] as f64, p[1] as f64]);
        [(q[0] * 10.0).round() / 10.0, (q[1] * 10.0).round() / 10.0]
    };
    let size = (photo.width(), photo.height());
    let faces: Vec<_> = found
        .faces
        .iter()
        .map(|f| {
            let b = f.detection.bbox;
            json!({
                "box": [orig([b[0], b[1]]), orig([b[2], b[3]])],
                "score": f.detection.score,
                "keypoints": f.detection.keypoints.iter().map(|&k| orig(k)).collect::<Vec<_>>(),
                "landmarks": f.landmarks.as_ref().map(|l| l.points.iter().map(|p| orig([p[0], p[1]])).collect::<Vec<_>>()),
                "presence": f.landmarks.as_ref().map(|l| l.presence),
                "landmarks_accepted_by": match f.landmark_check {
                    LandmarkCheck::Presence => Some("presence"),
                    LandmarkCheck::DetectorKeypoints => Some("detector_keypoints"),
                    LandmarkCheck::Failed => None,
                },
                "iris_centres": f.iris_centers().map(|c| [orig(c[0]), orig(c[1])]),
                "visibility": f.visibility.as_ref().map(|v| v.iter().map(|x| (x * 100.0).round() / 100.0).collect::<Vec<_>>()),
                "iris_visibility": f.iris_visibility(size).map(|v| v.map(|x| (x * 100.0).round() / 100.0)),
                "occluded_fraction": f.occlusion.as_ref().map(|o| (o.occluded_fraction() * 1000.0).round() / 1000.0),
            })
        })
        .collect();
    let hands: Vec<_> = found
        .hands
        .iter()
        .map(|h| {
            json!({
                "landmarks": h.landmarks.points.iter().map(|p| orig([p[0], p[1]])).collect::<Vec<_>>(),
                "presence": h.landmarks.presence,
                "right_hand": h.landmarks.right_hand,
                "found_by": if h.palm.is_some() { "palm detection" } else { "hand search" },
            })
        })
        .collect();
    let t = &found.timings;
    let timings = json!({
        "face_detection_ms": ms(t.face_detection),
        "face_mesh_ms": ms(t.face_mesh),
        "iris_ms": ms(t.iris),
        "palm_detection_ms": ms(t.palm_detection),
        "hand_landmarks_ms": ms(t.hand_landmarks),
        "hand_search_ms": ms(t.hand_search),
        "segmentation_ms": ms(t.segmentation),
        "occlusion_ms": ms(t.occlusion),
        "total_ms": ms(t.total),
    });

    if let Some(out) = overlay {
        let img = draw_overlay(&photo, &found);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("could not encode the overlay: {e}"))?;
        visage_core::model::storage::write_atomically(out, &png)
            .map_err(|e| format!("could not write the overlay `{}`: {e}", out.display()))?;
    }

    if as_json {
        let v = json!({
            "photo": photo_path.display().to_string(),
            "size": [photo.meta().original_size[0], photo.meta().original_size[1]],
            "faces": faces,
            "hands": hands,
            "timings": timings,
        });
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("JSON values serialise")
        ));
        return Ok(());
    }
    let mut o = String::new();
    writeln!(
        o,
        "photo       {} ({}×{})",
        photo_path.display(),
        photo.meta().original_size[0],
        photo.meta().original_size[1]
    )
    .ok();
    if found.faces.is_empty() {
        writeln!(
            o,
            "faces       none found (try --full-range for small or distant faces)"
        )
        .ok();
    }
    for (i, f) in found.faces.iter().enumerate() {
        let b = f.detection.bbox;
        let (a, c) = (orig([b[0], b[1]]), orig([b[2], b[3]]));
        write!(
            o,
            "face {i}      box ({:.0}, {:.0})–({:.0}, {:.0}), score {:.2}",
            a[0], a[1], c[0], c[1], f.detection.score
        )
        .ok();
        match &f.landmarks {
            Some(l) => write!(
                o,
                ", {} landmarks (presence {:.2}{})",
                l.points.len(),
                l.presence,
                match f.landmark_check {
                    LandmarkCheck::Presence => "",
                    LandmarkCheck::DetectorKeypoints => ", confirmed by the detector's keypoints",
                    LandmarkCheck::Failed => ", rejected",
                }
            )
            .ok(),
            None => write!(o, ", no landmarks (beyond the largest faces)").ok(),
        };
        if let Some(c) = f.iris_centers() {
            let (r, l) = (orig(c[0]), orig(c[1]));
            write!(
                o,
                ", irises ({:.1}, {:.1}) ({:.1}, {:.1})",
                r[0], r[1], l[0], l[1]
            )
            .ok();
        }
        writeln!(o).ok();
        if let (Some(occ), Some(vis)) = (&f.occlusion, &f.visibility) {
            let hidden = vis.iter().filter(|&&v| v < 0.5).count();
            write!(
                o,
                "            occluded {:.1} % of the face region, {hidden} of {} landmarks hidden",
                occ.occluded_fraction() * 100.0,
                vis.len()
            )
            .ok();
            if let Some(iv) = f.iris_visibility(size) {
                let state = |v: f32| if v < 0.5 { "hidden" } else { "visible" };
                write!(o, ", irises {} / {}", state(iv[0]), state(iv[1])).ok();
            }
            writeln!(o).ok();
        }
    }
    let searched = found.hands.iter().filter(|h| h.palm.is_none()).count();
    if searched > 0 {
        writeln!(
            o,
            "hands       {} ({searched} found by the hand search around a face)",
            found.hands.len()
        )
        .ok();
    } else {
        writeln!(o, "hands       {}", found.hands.len()).ok();
    }
    writeln!(
        o,
        "timings     detection {} ms, mesh {} ms, iris {} ms, palms {} ms, hands {} ms, hand search {} ms, segmentation {} ms, occlusion {} ms, total {} ms",
        ms(t.face_detection), ms(t.face_mesh), ms(t.iris), ms(t.palm_detection), ms(t.hand_landmarks), ms(t.hand_search), ms(t.segmentation), ms(t.occlusion), ms(t.total)
    )
    .ok();
    if let Some(out) = overlay {
        writeln!(o, "overlay     {}", out.display()).ok();
    }
    emit(&o);
    Ok(())
}

fn dot(img: &mut RgbImage, p: [f32; 2], r: i32, colour: Rgb<u8>) {
    let (cx, cy) = (p[0].round() as i32, p[1].round() as i32);
    for dy in -r..=r {
        for dx in -r..=r {
            let (x, y) = (cx + dx, cy + dy);
            if dx * dx + dy * dy <= r * r
                && x >= 0
                && y >= 0
                && (x as u32) < img.width()
                && (y as u32) < img.height()
            {
                img.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

fn draw_overlay(photo: &Photo, found: &visage_core::perception::PerceptionResult) -> RgbImage {
    let mut img = photo.to_rgb_image();
    let r = ((img.width().max(img.height()) as f32) / 600.0).ceil() as i32;
    // Occluded face pixels tinted magenta by their probability (also where an occluder
    // continues past the face oval's lower edge), the rest of the face region slightly green.
    for f in &found.faces {
        let Some(occ) = &f.occlusion else { continue };
        let (m, face) = (occ.occluded(), occ.face_mask());
        let x1 = (m.x0 + m.cell * m.width as u32).min(img.width());
        let y1 = (m.y0 + m.cell * m.height as u32).min(img.height());
        for y in m.y0..y1 {
            for x in m.x0..x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let a = m.sample(px, py).clamp(0.0, 1.0);
                if face.sample(px, py) < 0.5 && a < 0.5 {
                    continue;
                }
                let tint = [255.0 * a, 255.0 * (1.0 - a), 255.0 * a];
                let k = 0.15 + 0.35 * a;
                let p = img.get_pixel_mut(x, y);
                for c in 0..3 {
                    p.0[c] = (p.0[c] as f32 * (1.0 - k) + tint[c] * k).round() as u8;
                }
            }
        }
    }
    for f in &found.faces {
        let b = f.detection.bbox;
        let steps = 200;
        for k in 0..=steps {
            let t = k as f32 / steps as f32;
            for p in [
                [b[0] + t * (b[2] - b[0]), b[1]],
                [b[0] + t * (b[2] - b[0]), b[3]],
                [b[0], b[1] + t * (b[3] - b[1])],
                [b[2], b[1] + t * (b[3] - b[1])],
            ] {
                dot(&mut img, p, r, Rgb([255, 200, 0]));
            }
        }
        if let Some(l) = &f.landmarks {
            for (i, p) in l.points.iter().enumerate() {
                let visible = f.visibility.as_ref().is_none_or(|v| v[i] >= 0.5);
                let colour = if visible {
                    Rgb([0, 255, 120])
                } else {
                    Rgb([255, 0, 200])
                };
                dot(&mut img, [p[0], p[1]], r, colour);
            }
        }
        if let Some(c) = f.iris_centers() {
            for p in c {
                dot(&mut img, p, 2 * r, Rgb([255, 40, 40]));
            }
        }
    }
    for h in &found.hands {
        for p in &h.landmarks.points {
            dot(&mut img, [p[0], p[1]], r, Rgb([60, 140, 255]));
        }
    }
    img
}
