"""The data side: reading COCO/VOC/CSV, the prepared folder, corruptions and splits, label statistics,
synthetic data, the image cache and the torch datasets that feed training and evaluation."""
