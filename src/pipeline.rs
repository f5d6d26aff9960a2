//! The systems that move a request through the stages. Each stage runs its work as a task on
//! the [`AsyncComputeTaskPool`], polls it with [`check_ready`] once per frame, and hands over
//! to the next stage through components on the request entity.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use bevy::asset::LoadState;
use bevy::prelude::*;
use bevy::tasks::futures::check_ready;
use bevy::tasks::{AsyncComputeTaskPool, Task};
use image::RgbImage;
use visage_core::model::{FlameParams, vertex_normals};

use crate::VisageSystems;
use crate::error::AvatarError;
use crate::mesh::HeadMeshLayout;
use crate::model::VisageModel;
use crate::photo::{decode_photo, image_to_rgb, one_line, rgb_to_bevy_image};
use crate::request::{
    AvatarFailed, AvatarMeshLayout, AvatarPhoto, AvatarProgress, AvatarReady, AvatarRequest,
    AvatarStage, AvatarStatus,
};
use crate::settings::VisageSettings;

type TaskResult<T> = Result<T, AvatarError>;

/// An image-asset request waiting for its asset.
#[derive(Component)]
struct PendingImage(Handle<Image>);

/// Decoding the photo.
#[derive(Component)]
struct PhotoTask(Task<TaskResult<DecodedPhoto>>);

struct DecodedPhoto {
    rgb: RgbImage,
    preview: Image,
}

/// The decoded photo's pixels, the input of the later stages.
#[derive(Component)]
pub(crate) struct PhotoPixels(
    #[allow(dead_code, reason = "read by the fitting stages")] pub Arc<RgbImage>,
);

/// The photo is decoded; the mesh stage has not started yet.
#[derive(Component)]
struct MeshPending;

/// Building the mesh.
#[derive(Component)]
struct MeshTask(Task<TaskResult<BuiltMesh>>);

struct BuiltMesh {
    mesh: Mesh,
    layout: Arc<HeadMeshLayout>,
}

/// Everything a request leaves on its entity; removed when a new request starts.
type RequestState = (
    PendingImage,
    PhotoTask,
    PhotoPixels,
    MeshPending,
    MeshTask,
    AvatarPhoto,
    AvatarMeshLayout,
    Mesh3d,
    MeshMaterial3d<StandardMaterial>,
);

pub(crate) fn add_systems(app: &mut App) {
    app.add_systems(
        Update,
        (
            (
                cancel_removed_requests,
                start_requests,
                wait_for_images,
                poll_photo_tasks,
            )
                .chain()
                .in_set(VisageSystems::Ingest),
            (start_mesh_tasks, poll_mesh_tasks)
                .chain()
                .in_set(VisageSystems::Spawn),
        ),
    );
}

/// Runs `work` on the async compute pool; a panic inside becomes an error value.
fn spawn_work<T: Send + 'static>(
    stage: AvatarStage,
    work: impl FnOnce() -> TaskResult<T> + Send + 'static,
) -> Task<TaskResult<T>> {
    AsyncComputeTaskPool::get().spawn(async move {
        std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(AvatarError::TaskAborted {
                stage: stage.label().into(),
                detail,
            })
        })
    })
}

/// Records a failure on the entity and sends [`AvatarFailed`].
fn fail(
    entity: Entity,
    status: &mut AvatarStatus,
    error: &AvatarError,
    failed: &mut MessageWriter<AvatarFailed>,
) {
    let reason = error.to_string();
    warn!("avatar {entity}: {reason}");
    status.error = Some(reason.clone());
    failed.write(AvatarFailed { entity, reason });
}

/// Moves the entity to `stage` and sends [`AvatarProgress`].
fn advance(
    entity: Entity,
    status: &mut AvatarStatus,
    stage: AvatarStage,
    within: f32,
    progress: &mut MessageWriter<AvatarProgress>,
) {
    status.stage = stage;
    status.fraction = stage.overall(within);
    status.error = None;
    progress.write(AvatarProgress {
        entity,
        stage,
        fraction: status.fraction,
    });
}

fn cancel_removed_requests(mut commands: Commands, mut removed: RemovedComponents<AvatarRequest>) {
    for entity in removed.read() {
        // Dropping a task cancels it. The entity may be gone already.
        if let Ok(mut e) = commands.get_entity(entity) {
            e.try_remove::<(PendingImage, PhotoTask, MeshPending, MeshTask)>();
        }
    }
}

fn start_requests(
    mut commands: Commands,
    mut requests: Query<(Entity, &AvatarRequest, &mut AvatarStatus), Changed<AvatarRequest>>,
    settings: Res<VisageSettings>,
    mut progress: MessageWriter<AvatarProgress>,
) {
    for (entity, request, mut status) in &mut requests {
        let mut e = commands.entity(entity);
        e.remove::<RequestState>();
        advance(
            entity,
            &mut status,
            AvatarStage::DecodingPhoto,
            0.0,
            &mut progress,
        );
        match request {
            AvatarRequest::Path(path) => {
                let path: PathBuf = path.clone();
                let max_side = settings.max_photo_side;
                let task = spawn_work(AvatarStage::DecodingPhoto, move || {
                    let rgb = decode_photo(&path, max_side)?;
                    let preview = rgb_to_bevy_image(&rgb);
                    Ok(DecodedPhoto { rgb, preview })
                });
                e.insert(PhotoTask(task));
            }
            AvatarRequest::Image(handle) => {
                e.insert(PendingImage(handle.clone()));
            }
        }
    }
}

fn wait_for_images(
    mut commands: Commands,
    mut pending: Query<(Entity, &PendingImage, &mut AvatarStatus)>,
    images: Res<Assets<Image>>,
    asset_server: Res<AssetServer>,
    settings: Res<VisageSettings>,
    mut failed: MessageWriter<AvatarFailed>,
) {
    for (entity, PendingImage(handle), mut status) in &mut pending {
        let name = handle
            .path()
            .map_or_else(|| format!("{:?}", handle.id()), ToString::to_string);
        if let Some(image) = images.get(handle) {
            // The pixels are copied here; the conversion runs in the background.
            let image = image.clone();
            let max_side = settings.max_photo_side;
            let task = spawn_work(AvatarStage::DecodingPhoto, move || {
                let rgb = image_to_rgb(&image, &name, max_side)?;
                let preview = rgb_to_bevy_image(&rgb);
                Ok(DecodedPhoto { rgb, preview })
            });
            commands
                .entity(entity)
                .remove::<PendingImage>()
                .insert(PhotoTask(task));
        } else if let Some(LoadState::Failed(error)) = asset_server.get_load_state(handle.id()) {
            commands.entity(entity).remove::<PendingImage>();
            let error = AvatarError::ImageAssetFailed {
                name,
                detail: one_line(&error.to_string()),
            };
            fail(entity, &mut status, &error, &mut failed);
        }
    }
}

fn poll_photo_tasks(
    mut commands: Commands,
    mut tasks: Query<(Entity, &mut PhotoTask, &mut AvatarStatus)>,
    mut images: ResMut<Assets<Image>>,
    mut progress: MessageWriter<AvatarProgress>,
    mut failed: MessageWriter<AvatarFailed>,
) {
    for (entity, mut task, mut status) in &mut tasks {
        let Some(result) = check_ready(&mut task.0) else {
            continue;
        };
        let mut e = commands.entity(entity);
        e.remove::<PhotoTask>();
        match result {
            Ok(DecodedPhoto { rgb, preview }) => {
                e.insert((
                    AvatarPhoto(images.add(preview)),
                    PhotoPixels(Arc::new(rgb)),
                    MeshPending,
                ));
                advance(
                    entity,
                    &mut status,
                    AvatarStage::DecodingPhoto,
                    1.0,
                    &mut progress,
                );
            }
            Err(error) => fail(entity, &mut status, &error, &mut failed),
        }
    }
}

fn start_mesh_tasks(
    mut commands: Commands,
    mut pending: Query<(Entity, &mut AvatarStatus), With<MeshPending>>,
    settings: Res<VisageSettings>,
    model: Res<VisageModel>,
    mut progress: MessageWriter<AvatarProgress>,
) {
    for (entity, mut status) in &mut pending {
        let cache = model.clone();
        let path = settings.resolved_model_path();
        let task = spawn_work(AvatarStage::BuildingMesh, move || {
            let loaded = cache.get_or_load(&path)?;
            let model = &loaded.model;
            let head = model.forward(&FlameParams::zeros(model));
            let normals = vertex_normals(&head.vertices, &model.triangles);
            let mesh = loaded.layout.build_mesh(&head.vertices, &normals);
            Ok(BuiltMesh {
                mesh,
                layout: loaded.layout.clone(),
            })
        });
        commands
            .entity(entity)
            .remove::<MeshPending>()
            .insert(MeshTask(task));
        advance(
            entity,
            &mut status,
            AvatarStage::BuildingMesh,
            0.0,
            &mut progress,
        );
    }
}

#[allow(clippy::too_many_arguments, reason = "one system, many outputs")]
fn poll_mesh_tasks(
    mut commands: Commands,
    mut tasks: Query<(Entity, &mut MeshTask, &mut AvatarStatus)>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
    settings: Res<VisageSettings>,
    mut progress: MessageWriter<AvatarProgress>,
    mut ready: MessageWriter<AvatarReady>,
    mut failed: MessageWriter<AvatarFailed>,
) {
    for (entity, mut task, mut status) in &mut tasks {
        let Some(result) = check_ready(&mut task.0) else {
            continue;
        };
        let mut e = commands.entity(entity);
        e.remove::<MeshTask>();
        match result {
            Ok(BuiltMesh { mesh, layout }) => {
                let material = StandardMaterial {
                    base_color: settings.skin_color,
                    perceptual_roughness: 0.6,
                    reflectance: 0.4,
                    ..default()
                };
                e.insert((
                    Mesh3d(meshes.add(mesh)),
                    MeshMaterial3d(materials.add(material)),
                    AvatarMeshLayout(layout),
                ));
                advance(entity, &mut status, AvatarStage::Ready, 1.0, &mut progress);
                ready.write(AvatarReady { entity });
            }
            Err(error) => fail(entity, &mut status, &error, &mut failed),
        }
    }
}
