//! Conversion of head-model geometry into a Bevy [`Mesh`].

use bevy::asset::RenderAssetUsages;
use bevy::mesh::{Indices, PrimitiveTopology};
use bevy::prelude::*;
use visage_core::model::FlameModel;

/// The vertex layout of an avatar mesh for one head model.
///
/// A GPU vertex carries one UV, but the model's UV layout gives UVs per triangle corner
/// ("wedge"), so a model vertex on a UV seam becomes several mesh vertices. Mesh vertex `i < V`
/// (V = model vertex count) is always model vertex `i`; the extra copies made by seams follow.
/// Without a UV layout the mesh vertices are exactly the model vertices.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadMeshLayout {
    /// For each mesh vertex, the model vertex it shows.
    pub source_vertex: Vec<u32>,
    /// For each mesh vertex, its texture coordinate (origin top-left, `v` downwards), when the
    /// model has a UV layout.
    pub uvs: Option<Vec<[f32; 2]>>,
    /// Triangle list over mesh vertices, three indices per model triangle, in model order.
    pub indices: Vec<u32>,
    /// Number of model vertices.
    pub num_model_vertices: usize,
}

impl HeadMeshLayout {
    /// Builds the layout of `model`, splitting vertices along its UV seams.
    pub fn new(model: &FlameModel) -> Self {
        let nv = model.num_vertices();
        let Some(uv) = &model.uv else {
            return Self {
                source_vertex: (0..nv as u32).collect(),
                uvs: None,
                indices: model.triangles.iter().flatten().copied().collect(),
                num_model_vertices: nv,
            };
        };
        // For each model vertex, the UV index its primary copy (mesh vertex `v`) carries.
        let mut primary_uv: Vec<Option<u32>> = vec![None; nv];
        // Extra copies: (model vertex, uv index) -> mesh vertex. Seams are short, so a sorted
        // list per vertex would do; a hash map keeps it simple and linear overall.
        let mut extra = bevy::platform::collections::HashMap::<(u32, u32), u32>::default();
        let mut source_vertex: Vec<u32> = (0..nv as u32).collect();
        let mut uv_index: Vec<u32> = vec![0; nv];
        let mut indices = Vec::with_capacity(model.triangles.len() * 3);
        for (tri, uv_tri) in model.triangles.iter().zip(&uv.faces) {
            for (&v, &t) in tri.iter().zip(uv_tri) {
                let slot = &mut primary_uv[v as usize];
                let mesh_vertex = match *slot {
                    None => {
                        *slot = Some(t);
                        uv_index[v as usize] = t;
                        v
                    }
                    Some(p) if p == t => v,
                    Some(_) => *extra.entry((v, t)).or_insert_with(|| {
                        source_vertex.push(v);
                        uv_index.push(t);
                        (source_vertex.len() - 1) as u32
                    }),
                };
                indices.push(mesh_vertex);
            }
        }
        let uvs = uv_index
            .iter()
            .map(|&t| uv.coords.get(t as usize).copied().unwrap_or([0.0, 0.0]))
            .collect();
        Self {
            source_vertex,
            uvs: Some(uvs),
            indices,
            num_model_vertices: nv,
        }
    }

    /// Number of mesh vertices.
    pub fn num_mesh_vertices(&self) -> usize {
        self.source_vertex.len()
    }

    /// Copies per-model-vertex values (positions, normals, colours…) to per-mesh-vertex values.
    /// `values` must hold one value per model vertex.
    pub fn expand<T: Copy>(&self, values: &[T]) -> Vec<T> {
        self.source_vertex
            .iter()
            .map(|&v| values[v as usize])
            .collect()
    }

    /// A triangle-list mesh with positions, normals, UVs (when the layout has them) and
    /// indices, from per-model-vertex `positions` and `normals`. The mesh stays readable on the
    /// CPU (`RenderAssetUsages::default()`), so it can be updated in place later.
    pub fn build_mesh(&self, positions: &[[f32; 3]], normals: &[[f32; 3]]) -> Mesh {
        let mut mesh = Mesh::new(
            PrimitiveTopology::TriangleList,
            RenderAssetUsages::default(),
        );
        mesh.insert_attribute(Mesh::ATTRIBUTE_POSITION, self.expand(positions));
        mesh.insert_attribute(Mesh::ATTRIBUTE_NORMAL, self.expand(normals));
        if let Some(uvs) = &self.uvs {
            mesh.insert_attribute(Mesh::ATTRIBUTE_UV_0, uvs.clone());
        }
        mesh.insert_indices(Indices::U32(self.indices.clone()));
        mesh
    }
}
