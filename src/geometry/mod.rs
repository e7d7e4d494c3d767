//! Two-view geometry: homography and fundamental-matrix estimators and LO-RANSAC.
