#!/usr/bin/env python
"""Draw a trained detector's detections on images (or a webcam stream).

python demo/atss_demo.py --config-file configs/atss/atss_R_50_FPN_1x.yaml \
    --weights ATSS_R_50_FPN_1x.pth --input demo/images --output-dir demo/output
"""
import argparse
import os
import sys
import time

import cv2

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from predictor import COCODemo  # noqa: E402

from atss_core.config import cfg  # noqa: E402
from atss_core.utils.miscellaneous import load_config, mkdir  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_paths(path):
    """``path`` itself if it is a file, else the images directly inside the folder, sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input: {path!r} is neither an image file nor a folder")
    return sorted(
        os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def run_on_images(demo, input_path, output_dir, max_images=0):
    mkdir(output_dir)
    paths = image_paths(input_path)
    for path in paths[:max_images] if max_images > 0 else paths:
        image = cv2.imread(path)
        if image is None:
            print(f"skipping {path}: not readable as an image", file=sys.stderr)
            continue
        start = time.perf_counter()
        composite = demo.run_on_opencv_image(image)
        elapsed = time.perf_counter() - start
        out_path = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + "_det.png")
        if not cv2.imwrite(out_path, composite):
            raise OSError(f"could not write {out_path}")
        print(f"{out_path}\tinference time: {elapsed:.2f}s")


def run_on_webcam(demo):
    camera = cv2.VideoCapture(0)
    if not camera.isOpened():
        raise RuntimeError("--webcam: could not open camera 0")
    try:
        while True:
            ok, frame = camera.read()
            if not ok:
                break
            start = time.perf_counter()
            composite = demo.run_on_opencv_image(frame)
            print(f"Time: {time.perf_counter() - start:.2f} s / img")
            cv2.imshow("atss_core detections", composite)
            if cv2.waitKey(1) == 27:  # Esc
                break
    finally:
        camera.release()
        cv2.destroyAllWindows()


def main():
    parser = argparse.ArgumentParser(description="atss_core demo")
    parser.add_argument("--config-file", default="configs/atss/atss_R_50_FPN_1x.yaml", metavar="FILE")
    parser.add_argument("--weights", default="ATSS_R_50_FPN_1x.pth", metavar="FILE", help="trained detector")
    parser.add_argument("--input", default="demo/images", help="an image file or a folder of images")
    parser.add_argument("--output-dir", default="demo/output", help="where <name>_det.png files are written")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to draw")
    parser.add_argument(
        "--min-image-size",
        type=int,
        default=None,
        help="shorter side of the network input, longer side uncapped (default: the config's test resize)",
    )
    parser.add_argument("--max-images", type=int, default=0, help="only the first N images of --input (0 = all)")
    parser.add_argument("--webcam", action="store_true", help="read camera 0 instead of --input")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args()

    if "://" not in args.weights and not os.path.isfile(args.weights):
        raise FileNotFoundError(f"--weights: no such file {args.weights!r} (a checkpoint of tools/train_net.py)")
    for warning in load_config(cfg, args.config_file, list(args.opts) + ["MODEL.WEIGHT", args.weights]):
        print(warning, file=sys.stderr)
    demo = COCODemo(cfg, confidence_threshold=args.confidence_threshold, min_image_size=args.min_image_size)
    if args.webcam:
        run_on_webcam(demo)
    else:
        run_on_images(demo, args.input, args.output_dir, args.max_images)


if __name__ == "__main__":
    main()
