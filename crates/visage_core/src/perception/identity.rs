//! Identity embedding: dlib face-recognition ResNet (150×150 chip → 128-D).
