"""Multi-view scenes in a video set: how the K camera views of one scene are stored and found.

A multi-view protocol (drivewm_mview: 150 nuScenes scenes x 6 cameras = 900 videos) is scored
as single-view videos, one per (scene, view): FVD over the videos, FID over their frames
(Drive-WM's reading, docs/DESIGN.md section 4). The video-set format therefore needs no new field:

- a scene's view v is the clip `<scene_id>/<v>` (e.g. `scene-0103/<token>/mview/CAM_FRONT`)
  with `source_clip` = `<scene_id>`; the K clips of a scene have the same frames, fps and
  condition frames;
- which views a set holds is given by the caller (the evaluation set records its `views`),
  since a clip id alone cannot tell a view suffix from any other path part.

Producers that generate views jointly (maskgwm.sample_mview) group the clips back into scenes
with `group_views`. Evaluators need only `scene_groups`: the views of a scene are correlated, so
the bootstrap resamples whole scenes (protocol bootstrap.unit "scene", evals/pipeline.py).
"""
from __future__ import annotations

from typing import Sequence

from .videoset import ClipEntry, VideoSetError


def view_clip_id(scene_id: str, view: str) -> str:
    """The clip id of `view` of scene `scene_id`."""
    if not view or "/" in view:
        raise VideoSetError(f"view name {view!r}: must be non-empty without '/'")
    return f"{scene_id}/{view}"


def split_view_clip_id(clip_id: str, views: Sequence[str]) -> tuple[str, str]:
    """(scene_id, view) of a view clip id; an id without one of `views` is an error."""
    scene_id, _, view = clip_id.rpartition("/")
    if not scene_id or view not in views:
        raise VideoSetError(f"clip {clip_id!r} is not a view clip '<scene>/<view>' with a view "
                            f"in {list(views)}")
    return scene_id, view


def scene_groups(clip_ids: Sequence[str]) -> list[int]:
    """Each clip's scene as an index in order of first appearance (scene 0, 0, ..., 1, ...).

    The scene of a view clip `<scene_id>/<view>` is everything before its last '/'; the
    view names are not needed (a view has no '/'), so gen and ref, which share the clip ids,
    get the same groups whatever their manifests' `source_clip` say."""
    index: dict[str, int] = {}
    groups = []
    for clip_id in clip_ids:
        scene_id, _, view = clip_id.rpartition("/")
        if not scene_id or not view:
            raise VideoSetError(f"clip {clip_id!r} is not a view clip '<scene>/<view>': a "
                                "protocol that resamples scenes (bootstrap.unit 'scene') "
                                "needs multi-view clip ids")
        groups.append(index.setdefault(scene_id, len(index)))
    return groups


def group_views(entries: Sequence[ClipEntry],
                views: Sequence[str]) -> list[tuple[str, list[ClipEntry]]]:
    """[(scene_id, its K entries in `views` order)] in order of first appearance.

    Every scene must have each view exactly once, and its views the same frame count, fps and
    condition frames (they are generated as one multi-view clip)."""
    scenes: dict[str, dict[str, ClipEntry]] = {}
    for entry in entries:
        scene_id, view = split_view_clip_id(entry.clip_id, views)
        found = scenes.setdefault(scene_id, {})
        if view in found:
            raise VideoSetError(f"scene {scene_id}: view {view} appears twice")
        found[view] = entry
    groups = []
    for scene_id, found in scenes.items():
        missing = [v for v in views if v not in found]
        if missing:
            raise VideoSetError(f"scene {scene_id}: views {missing} are missing (a multi-view "
                                f"scene needs all of {list(views)})")
        ordered = [found[v] for v in views]
        shapes = {(e.frames, e.fps, e.cond_frames) for e in ordered}
        if len(shapes) > 1:
            raise VideoSetError(f"scene {scene_id}: views differ in frames, fps or condition "
                                f"frames ({sorted(shapes)})")
        groups.append((scene_id, ordered))
    return groups
