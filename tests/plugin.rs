//! Headless tests of the Visage plugin: a `MinimalPlugins` app with assets and manual time,
//! driven frame by frame with `app.update()`.
//!
//! All plugin tests live in this one file: every Bevy test binary links for a long time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bevy::asset::AssetPlugin;
use bevy::ecs::message::{MessageCursor, Messages};
use bevy::image::{CompressedImageFormats, ImageLoader};
use bevy::mesh::{Indices, MeshPlugin, VertexAttributeValues};
use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_visage::prelude::*;
use bevy_visage::{AvatarMeshLayout, HeadMeshLayout, decode_photo};
use visage_core::model::{FlameModel, FlameParams, UvLayout};

/// Upper bound on frames per request; each frame also sleeps [`FRAME_SLEEP`] so the background
/// tasks get the CPU. Generous: unoptimised builds on a busy two-core machine are slow.
const MAX_FRAMES: usize = 30_000;
const FRAME_SLEEP: Duration = Duration::from_millis(2);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn astronaut() -> PathBuf {
    repo().join("assets/photos/astronaut.png")
}

fn shipped_model() -> PathBuf {
    let path = repo().join("assets/models/visage_head.safetensors");
    assert!(
        path.is_file(),
        "the shipped head model `{}` is missing from the repository",
        path.display()
    );
    path
}

/// A unique path in the system's temporary folder; the file is removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self(std::env::temp_dir().join(format!(
            "visage-plugin-test-{}-{nanos}-{name}",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn test_app(settings: VisageSettings) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        ImagePlugin::default(),
        MeshPlugin,
    ))
    .init_asset::<StandardMaterial>()
    // Without a renderer nobody registers the image loader; these tests load PNGs.
    .register_asset_loader(ImageLoader::new(CompressedImageFormats::NONE))
    .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
        16,
    )))
    .add_plugins(VisagePlugin { settings });
    app
}

/// Everything the plugin said about one entity until it finished.
#[derive(Debug, Default)]
struct Outcome {
    progress: Vec<(AvatarStage, f32)>,
    ready: bool,
    failed: Option<String>,
    frames: usize,
}

/// Reads all messages written since the cursor's last read.
fn drain<M: Message + Clone>(app: &App, cursor: &mut MessageCursor<M>) -> Vec<M> {
    let messages = app.world().resource::<Messages<M>>();
    cursor.read(messages).cloned().collect()
}

/// A cursor that skips the messages already written.
fn cursor_at_end<M: Message>(app: &App) -> MessageCursor<M> {
    app.world().resource::<Messages<M>>().get_cursor_current()
}

/// Updates the app until `entity` is ready or failed.
fn run_until_done(app: &mut App, entity: Entity) -> Outcome {
    let mut progress = cursor_at_end::<AvatarProgress>(app);
    let mut ready = cursor_at_end::<AvatarReady>(app);
    let mut failed = cursor_at_end::<AvatarFailed>(app);
    let mut outcome = Outcome::default();
    for frame in 1..=MAX_FRAMES {
        app.update();
        for p in drain(app, &mut progress) {
            if p.entity == entity {
                outcome.progress.push((p.stage, p.fraction));
            }
        }
        outcome.ready |= drain(app, &mut ready).iter().any(|r| r.entity == entity);
        if let Some(f) = drain(app, &mut failed)
            .into_iter()
            .find(|f| f.entity == entity)
        {
            outcome.failed = Some(f.reason);
        }
        if outcome.ready || outcome.failed.is_some() {
            outcome.frames = frame;
            return outcome;
        }
        std::thread::sleep(FRAME_SLEEP);
    }
    panic!("no AvatarReady or AvatarFailed after {MAX_FRAMES} frames: {outcome:?}");
}

/// The mesh attached to `entity`.
fn mesh_of(app: &App, entity: Entity) -> &Mesh {
    let handle = app
        .world()
        .get::<Mesh3d>(entity)
        .expect("the avatar entity has a Mesh3d");
    app.world()
        .resource::<Assets<Mesh>>()
        .get(&handle.0)
        .expect("the avatar's mesh asset exists")
}

fn positions(mesh: &Mesh) -> &[[f32; 3]] {
    match mesh.attribute(Mesh::ATTRIBUTE_POSITION) {
        Some(VertexAttributeValues::Float32x3(p)) => p,
        other => panic!("unexpected position attribute {other:?}"),
    }
}

fn indices(mesh: &Mesh) -> Vec<u32> {
    match mesh.indices() {
        Some(Indices::U32(i)) => i.clone(),
        other => panic!("unexpected indices {other:?}"),
    }
}

/// Checks that `mesh` shows `model`'s mean head through `layout`.
fn assert_mesh_shows_mean_head(mesh: &Mesh, layout: &HeadMeshLayout, model: &FlameModel) {
    let nv = model.num_vertices();
    // The expected vertex count, counted independently: one mesh vertex per distinct
    // (vertex, uv) corner pair, plus vertices no triangle uses.
    let expected = match &model.uv {
        None => nv,
        Some(uv) => {
            let pairs: HashSet<(u32, u32)> = model
                .triangles
                .iter()
                .zip(&uv.faces)
                .flat_map(|(t, u)| t.iter().copied().zip(u.iter().copied()))
                .collect();
            let used: HashSet<u32> = model.triangles.iter().flatten().copied().collect();
            pairs.len() + (nv - used.len())
        }
    };
    let pos = positions(mesh);
    assert_eq!(pos.len(), expected, "mesh vertex count");
    assert_eq!(layout.num_mesh_vertices(), expected);
    assert_eq!(layout.num_model_vertices, nv);

    // Every mesh vertex shows the mean-head position of its model vertex, every model vertex
    // is shown, and the first V mesh vertices are the model vertices in order.
    let head = model.forward(&FlameParams::zeros(model));
    let mut shown = vec![false; nv];
    for (i, (&p, &v)) in pos.iter().zip(&layout.source_vertex).enumerate() {
        assert_eq!(
            p, head.vertices[v as usize],
            "mesh vertex {i} (model vertex {v})"
        );
        if i < nv {
            assert_eq!(v as usize, i, "mesh vertex {i} is not model vertex {i}");
        }
        shown[v as usize] = true;
    }
    assert!(
        shown.iter().all(|&s| s),
        "some model vertex is not in the mesh"
    );

    // Triangles map back to the model's triangles, in order.
    let idx = indices(mesh);
    assert_eq!(idx.len(), model.num_triangles() * 3);
    for (f, (tri, mesh_tri)) in model.triangles.iter().zip(idx.chunks_exact(3)).enumerate() {
        let back = [0, 1, 2].map(|k| layout.source_vertex[mesh_tri[k] as usize]);
        assert_eq!(&back, tri, "triangle {f}");
    }

    // Normals are unit length; UVs are present exactly when the model has a UV layout, and
    // each corner carries its model UV.
    match mesh.attribute(Mesh::ATTRIBUTE_NORMAL) {
        Some(VertexAttributeValues::Float32x3(n)) => {
            assert_eq!(n.len(), expected);
            let unit = n
                .iter()
                .filter(|n| ((n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt() - 1.0).abs() < 1e-4)
                .count();
            assert!(
                unit >= expected * 99 / 100,
                "only {unit} of {expected} normals are unit"
            );
        }
        other => panic!("unexpected normal attribute {other:?}"),
    }
    match (&model.uv, mesh.attribute(Mesh::ATTRIBUTE_UV_0)) {
        (None, None) => {}
        (Some(uv), Some(VertexAttributeValues::Float32x2(mesh_uv))) => {
            for (mesh_tri, uv_tri) in idx.chunks_exact(3).zip(&uv.faces) {
                for k in 0..3 {
                    assert_eq!(mesh_uv[mesh_tri[k] as usize], uv.coords[uv_tri[k] as usize]);
                }
            }
        }
        (uv, attr) => panic!(
            "model UVs {:?} but mesh UV attribute {attr:?}",
            uv.is_some()
        ),
    }
}

#[test]
fn astronaut_photo_becomes_the_mean_head() {
    let model_path = shipped_model();
    let mut app = test_app(VisageSettings::default());
    let entity = app.world_mut().spawn(AvatarRequest::path(astronaut())).id();
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    assert_eq!(outcome.failed, None);

    // Progress: the stages in order, fractions rising to one.
    let stages: Vec<AvatarStage> = outcome.progress.iter().map(|p| p.0).collect();
    assert_eq!(stages.first(), Some(&AvatarStage::DecodingPhoto));
    assert!(stages.contains(&AvatarStage::BuildingMesh), "{stages:?}");
    assert_eq!(outcome.progress.last(), Some(&(AvatarStage::Ready, 1.0)));
    assert!(
        outcome
            .progress
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[0].0 <= w[1].0),
        "progress went backwards: {:?}",
        outcome.progress
    );

    let status = app.world().get::<AvatarStatus>(entity).unwrap();
    assert!(status.is_ready(), "{status:?}");
    assert_eq!(status.fraction, 1.0);

    // The decoded photo (512 x 512, under the default 2048 limit) is on the entity.
    let photo = app.world().get::<AvatarPhoto>(entity).expect("AvatarPhoto");
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&photo.0)
        .unwrap();
    assert_eq!((image.width(), image.height()), (512, 512));

    // The mesh is the shipped model's mean head.
    let loaded = app
        .world()
        .resource::<VisageModel>()
        .get()
        .expect("the model is loaded");
    assert_eq!(loaded.path, model_path);
    assert_eq!(loaded.model.num_vertices(), 5023);
    let layout = app
        .world()
        .get::<AvatarMeshLayout>(entity)
        .unwrap()
        .0
        .clone();
    assert!(std::sync::Arc::ptr_eq(&layout, &loaded.layout));
    let mesh = mesh_of(&app, entity);
    assert_mesh_shows_mean_head(mesh, &layout, &loaded.model);
    if loaded.model.uv.is_none() {
        assert_eq!(positions(mesh).len(), 5023);
    } else {
        assert!(positions(mesh).len() > 5023);
    }
    assert!(
        app.world()
            .get::<MeshMaterial3d<StandardMaterial>>(entity)
            .is_some()
    );

    // A second request reuses the loaded model.
    let second = app.world_mut().spawn(AvatarRequest::path(astronaut())).id();
    assert!(run_until_done(&mut app, second).ready);
    let again = app.world().resource::<VisageModel>().get().unwrap();
    assert!(std::sync::Arc::ptr_eq(&again.model, &loaded.model));
}

#[test]
fn missing_photo_fails_with_a_sentence_naming_the_file() {
    let mut app = test_app(VisageSettings::default());
    let path = repo().join("assets/photos/no-such-photo.jpg");
    let entity = app.world_mut().spawn(AvatarRequest::path(&path)).id();
    let outcome = run_until_done(&mut app, entity);
    let reason = outcome.failed.expect("AvatarFailed");
    assert_eq!(
        reason,
        format!(
            "could not read the photo `{}`: the file does not exist",
            path.display()
        )
    );
    let status = app.world().get::<AvatarStatus>(entity).unwrap();
    assert_eq!(status.error.as_deref(), Some(reason.as_str()));
    assert_eq!(status.stage, AvatarStage::DecodingPhoto);
    assert!(app.world().get::<Mesh3d>(entity).is_none());
}

#[test]
fn corrupt_photo_fails_as_undecodable() {
    let file = TempFile::new("garbage.jpg");
    // A JPEG start-of-image marker followed by bytes that are no JPEG at all.
    let mut bytes = vec![0xFF, 0xD8, 0xFF];
    bytes.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&file.0, &bytes).unwrap();

    let mut app = test_app(VisageSettings::default());
    let entity = app.world_mut().spawn(AvatarRequest::path(&file.0)).id();
    let reason = run_until_done(&mut app, entity)
        .failed
        .expect("AvatarFailed");
    assert!(
        reason.contains(&file.0.display().to_string())
            && reason.contains("could not be decoded as JPEG"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");

    // Text is not an image either, whatever its name says.
    let text = TempFile::new("notes.png");
    std::fs::write(&text.0, "these are not pixels").unwrap();
    let entity = app.world_mut().spawn(AvatarRequest::path(&text.0)).id();
    let reason = run_until_done(&mut app, entity)
        .failed
        .expect("AvatarFailed");
    assert!(
        reason.contains("is not a photo Visage can read"),
        "{reason}"
    );
    assert!(reason.contains("notes.png"), "{reason}");
}

#[test]
fn missing_model_fails_with_a_sentence_naming_the_model() {
    let missing = std::env::temp_dir().join("visage-no-such-model.safetensors");
    let settings = VisageSettings {
        model_path: missing.clone(),
        ..default()
    };
    let mut app = test_app(settings);
    let entity = app.world_mut().spawn(AvatarRequest::path(astronaut())).id();
    let outcome = run_until_done(&mut app, entity);
    let reason = outcome.failed.expect("AvatarFailed");
    let prefix = format!("the head model `{}` is missing: ", missing.display());
    assert!(reason.starts_with(&prefix), "{reason}");
    let status = app.world().get::<AvatarStatus>(entity).unwrap();
    assert_eq!(status.stage, AvatarStage::BuildingMesh);
    // The photo stage finished before the model was needed.
    assert!(app.world().get::<AvatarPhoto>(entity).is_some());
}

#[test]
fn image_asset_requests_wait_for_the_asset() {
    let _ = shipped_model();
    let mut app = test_app(VisageSettings {
        max_photo_side: 200,
        ..default()
    });

    // An image added directly: ready at once. A 300 x 150 RGBA image scaled to 200 x 100,
    // its transparent left 30 columns composited over white as a photo file's would be.
    let rgb = decode_photo(&astronaut(), 300).unwrap();
    let wide = image::imageops::crop_imm(&rgb, 0, 0, 300, 150).to_image();
    let mut rgba = image::DynamicImage::ImageRgb8(wide).into_rgba8();
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        if x < 30 {
            p.0 = [10, 20, 30, 0];
        }
    }
    let image = Image::from_dynamic(
        image::DynamicImage::ImageRgba8(rgba),
        true,
        bevy::asset::RenderAssetUsages::default(),
    );
    let handle = app.world_mut().resource_mut::<Assets<Image>>().add(image);
    let entity = app.world_mut().spawn(AvatarRequest::image(handle)).id();
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    let photo = app.world().get::<AvatarPhoto>(entity).unwrap();
    let shown = app
        .world()
        .resource::<Assets<Image>>()
        .get(&photo.0)
        .unwrap();
    assert_eq!((shown.width(), shown.height()), (200, 100));
    let data = shown.data.as_ref().expect("the photo's pixels");
    let at = |x: usize, y: usize| &data[(y * 200 + x) * 4..(y * 200 + x) * 4 + 3];
    assert_eq!(
        at(5, 50),
        &[255, 255, 255],
        "transparent pixels become white"
    );
    assert_ne!(at(100, 50), &[255, 255, 255]);

    // An image loaded by the asset server (from `assets/`).
    let handle: Handle<Image> = app
        .world()
        .resource::<AssetServer>()
        .load("photos/astronaut.png");
    let entity = app.world_mut().spawn(AvatarRequest::image(handle)).id();
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    let photo = app.world().get::<AvatarPhoto>(entity).unwrap();
    let shown = app
        .world()
        .resource::<Assets<Image>>()
        .get(&photo.0)
        .unwrap();
    assert_eq!((shown.width(), shown.height()), (200, 200));

    // An asset that fails to load fails the request, naming the asset.
    let handle: Handle<Image> = app
        .world()
        .resource::<AssetServer>()
        .load("photos/no-such-photo.png");
    let entity = app.world_mut().spawn(AvatarRequest::image(handle)).id();
    let reason = run_until_done(&mut app, entity)
        .failed
        .expect("AvatarFailed");
    assert!(
        reason.starts_with("the image asset `photos/no-such-photo.png` could not be loaded: "),
        "{reason}"
    );
}

#[test]
fn a_new_request_replaces_the_previous_result() {
    let _ = shipped_model();
    let mut app = test_app(VisageSettings::default());
    let entity = app.world_mut().spawn(AvatarRequest::path(astronaut())).id();
    assert!(run_until_done(&mut app, entity).ready);
    assert!(app.world().get::<Mesh3d>(entity).is_some());

    // A failing request on the same entity removes the old head and reports the failure.
    app.world_mut()
        .entity_mut(entity)
        .insert(AvatarRequest::path("no-such-photo.png"));
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.failed.is_some(), "{outcome:?}");
    assert!(app.world().get::<Mesh3d>(entity).is_none());
    assert!(app.world().get::<AvatarPhoto>(entity).is_none());

    // And a good one brings a head back.
    app.world_mut()
        .entity_mut(entity)
        .insert(AvatarRequest::path(astronaut()));
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    let status = app.world().get::<AvatarStatus>(entity).unwrap();
    assert!(status.is_ready() && status.error.is_none(), "{status:?}");
    assert!(app.world().get::<Mesh3d>(entity).is_some());
}

/// A unit square in the z = 0 plane, two triangles, with a UV seam through vertex 0.
fn square_model(with_uv: bool) -> FlameModel {
    FlameModel {
        meta: visage_core::model::ModelMeta {
            name: "test square".into(),
            format_version: visage_core::model::storage::FORMAT_VERSION,
            units: "metres".into(),
            ..Default::default()
        },
        template: vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
        ],
        triangles: vec![[0, 1, 2], [0, 2, 3]],
        uv: with_uv.then(|| UvLayout {
            coords: vec![[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.5, 0.5]],
            // Vertex 0 has UV 0 in the first triangle and UV 4 in the second.
            faces: vec![[0, 1, 2], [4, 2, 3]],
        }),
        ..Default::default()
    }
}

#[test]
fn mesh_layout_splits_vertices_on_uv_seams() {
    let plain = HeadMeshLayout::new(&square_model(false));
    assert_eq!(plain.source_vertex, vec![0, 1, 2, 3]);
    assert_eq!(plain.indices, vec![0, 1, 2, 0, 2, 3]);
    assert_eq!(plain.uvs, None);

    let split = HeadMeshLayout::new(&square_model(true));
    assert_eq!(split.source_vertex, vec![0, 1, 2, 3, 0]);
    assert_eq!(split.indices, vec![0, 1, 2, 4, 2, 3]);
    assert_eq!(
        split.uvs,
        Some(vec![
            [0.0, 1.0],
            [1.0, 1.0],
            [1.0, 0.0],
            [0.0, 0.0],
            [0.5, 0.5]
        ])
    );
    assert_eq!(split.expand(&[10, 11, 12, 13]), vec![10, 11, 12, 13, 10]);
}

#[test]
fn a_model_file_from_settings_is_loaded_and_meshed() {
    let file = TempFile::new("square.safetensors");
    let model = square_model(true);
    model.save(&file.0).unwrap();
    let mut app = test_app(VisageSettings {
        model_path: file.0.clone(),
        ..default()
    });
    let entity = app.world_mut().spawn(AvatarRequest::path(astronaut())).id();
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    let loaded = app.world().resource::<VisageModel>().get().unwrap();
    assert_eq!(loaded.path, file.0);
    let layout = app
        .world()
        .get::<AvatarMeshLayout>(entity)
        .unwrap()
        .0
        .clone();
    let mesh = mesh_of(&app, entity);
    assert_eq!(positions(mesh).len(), 5);
    assert_mesh_shows_mean_head(mesh, &layout, &loaded.model);
    // The square faces +z: every normal is (0, 0, 1).
    match mesh.attribute(Mesh::ATTRIBUTE_NORMAL) {
        Some(VertexAttributeValues::Float32x3(n)) => {
            assert!(n.iter().all(|n| *n == [0.0, 0.0, 1.0]), "{n:?}");
        }
        other => panic!("unexpected normals {other:?}"),
    }
}

/// The program shown in `docs/plugin.md`, verbatim apart from the module around it.
mod docs_snippet {
    use bevy::prelude::*;
    use bevy_visage::prelude::*;

    #[allow(
        dead_code,
        reason = "compiled to keep the documentation honest; needs a GPU to run"
    )]
    pub fn main() {
        App::new()
            .add_plugins(DefaultPlugins)
            .add_plugins(VisagePlugin {
                settings: VisageSettings {
                    max_photo_side: 1024,
                    ..default()
                },
            })
            .add_systems(Startup, request_avatar)
            .add_systems(Update, report_avatars.after(VisageSystems::Spawn))
            .run();
    }

    /// Asks for a head built from a photo, placed where the game wants it.
    pub fn request_avatar(mut commands: Commands) {
        commands.spawn((
            AvatarRequest::path("assets/photos/astronaut.png"),
            Transform::from_xyz(0.0, 1.6, 0.0),
        ));
    }

    /// Follows the requests: progress, success (the entity now has a mesh), failure.
    pub fn report_avatars(
        mut progress: MessageReader<AvatarProgress>,
        mut ready: MessageReader<AvatarReady>,
        mut failed: MessageReader<AvatarFailed>,
        heads: Query<&Mesh3d>,
    ) {
        for p in progress.read() {
            info!(
                "avatar {}: {} ({:.0} %)",
                p.entity,
                p.stage,
                p.fraction * 100.0
            );
        }
        for r in ready.read() {
            if let Ok(mesh) = heads.get(r.entity) {
                info!("avatar {} is ready (mesh {:?})", r.entity, mesh.0.id());
            }
        }
        for f in failed.read() {
            warn!("avatar {} failed: {}", f.entity, f.reason);
        }
    }
}

#[test]
fn the_documented_systems_build_a_head() {
    let _ = shipped_model();
    let mut app = test_app(VisageSettings {
        max_photo_side: 1024,
        ..default()
    });
    app.add_systems(Startup, docs_snippet::request_avatar)
        .add_systems(
            Update,
            docs_snippet::report_avatars.after(VisageSystems::Spawn),
        );
    app.update();
    let entity = app
        .world_mut()
        .query_filtered::<Entity, With<AvatarRequest>>()
        .single(app.world())
        .expect("one request");
    let outcome = run_until_done(&mut app, entity);
    assert!(outcome.ready, "{outcome:?}");
    assert_eq!(
        app.world().get::<Transform>(entity).unwrap().translation,
        Vec3::new(0.0, 1.6, 0.0)
    );
    assert!(app.world().get::<Mesh3d>(entity).is_some());
}
