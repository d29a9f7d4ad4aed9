"""How the planner sizes each backbone's input and batch for a dataset (the backbone facts it uses, input
sizes and memory model, are in models/backbone_registry.py)."""

MAX_BATCH_SIZE = 32
# Training on a CPU: the batch that gave the most test Dice per CPU minute (docs/benchmarks.md "CPU batch size")
CPU_BATCH_SIZE = 8
DEFAULT_GPU_MEMORY_GB = 8.0
MIN_PIXELS_PER_VOXEL = 1.5


def input_size_for(spec, median_in_plane_shape):
    """The smallest of the backbone's input sizes that still resamples the median slice's longer side
    to at least MIN_PIXELS_PER_VOXEL pixels per voxel (the largest size when none does). Fewer pixels
    make every step cheaper, and on MSD hippocampus (median slice 50 x 35) smaller inputs were also no
    less accurate: LiteMedSAM `decoder` heads trained for the same 200 iterations reached a mean test
    Dice of 0.720 / 0.739 at 64, 0.738 / 0.746 at 96, 0.724 / 0.678 at 128 and 0.655 at 256 (two seeds;
    benchmarks/litemedsam_input_size.py). 1.5 pixels per voxel picks 96 there, the best of both seeds.
    LiteMedSAM's sizes start at 96: at 64 its token grid (16 x 16) is barely larger than one 14-token
    attention window, hippocampus gained nothing, and the demo phantoms (27 x 26 voxels) lost Dice
    (held-out mean 0.940 at 64, 0.963 at 96, 0.977 at 128; one run each)."""
    sizes = sorted(spec.input_sizes or (spec.native_input_size,))
    needed = MIN_PIXELS_PER_VOXEL * max(median_in_plane_shape)
    return next((s for s in sizes if s >= needed), sizes[-1])


def batch_size_for(spec, input_size, gpu_memory_gb):
    """Largest batch whose estimated memory fits the GPU budget (at least 1, at most MAX_BATCH_SIZE); a CPU
    run is not bound by memory but by compute per step, and uses min(this, CPU_BATCH_SIZE)."""
    per_sample = spec.sample_memory_at(input_size)
    fits = int((gpu_memory_gb - spec.model_memory_gb) // per_sample)
    return max(1, min(MAX_BATCH_SIZE, fits))
