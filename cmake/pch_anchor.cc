// Empty translation unit: the targets in cmake/PrecompiledHeaders.cmake are
// only there to build the precompiled headers other targets reuse.
