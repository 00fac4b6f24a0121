//! Being written (issue in progress); this placeholder keeps the workspace loading.
