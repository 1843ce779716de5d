//! The GPT disk layout shared by the image builder and the running init.
