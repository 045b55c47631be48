"""Rating data the analysis tests share: SUREAL's NFLX public votes (embedded) and a synthetic ACR study
with known condition effects, revealing condition names and metric columns that track (or ignore) MOS."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Netflix public dataset with 4 planted outlier subjects (columns 26-29): NFLX_dataset_public_raw_last4outliers.py
# from github.com/Netflix/sureal (Apache-2.0; the same votes are in Netflix/vmaf's resource/dataset/), in the
# file's order. One line per stimulus: asset_id, content_id, then the 30 subjects' votes (1-5) as digits.
# Columns 0-25 are the plain NFLX public dataset (79 PVS x 26 subjects).
NFLX_LAST4OUTLIERS = """9 0 1112111113 1221112112 1111124252
10 0 2123312223 2342122122 3112324211
11 0 2223222224 3335222422 2221335514
12 0 3344433335 3443223333 3232434332
13 0 4354444445 4454334334 3342455451
14 0 5355555555 5554454553 5445553544
15 0 5455554555 5555454554 4453442553
16 0 5435554555 5555455555 5443554545
17 0 5545555555 5555555555 5454555255
18 0 5555535555 4555555545 5554555252
0 0 5455553555 5555555555 5555554324
19 1 2133222313 3235112222 1211322343
20 1 1133212213 2242312213 2211225454
21 1 2243132334 2343312223 3322344452
22 1 2243323335 3342323323 2322424523
23 1 3344444335 3444434334 3343434125
24 1 4455454445 5445555344 5544544445
25 1 5555555545 5555545555 5555541554
26 1 4555555545 5545555555 4555554554
1 1 4555555545 4555555555 5555553515
27 2 1111111111 1111111111 1111115245
28 2 2222212313 1312222222 1221324345
29 2 2335331314 3434333212 2332335542
30 2 3343433434 4443333223 4342435423
31 2 3355453545 4444454324 4434534324
32 2 5555435545 4545454443 4444542311
33 2 5544544545 4444555455 5454545342
2 2 5555554534 4555555445 5545555551
34 3 1111113112 2211111111 1111112214
35 3 1122311112 3332211111 2111124233
36 3 3345443424 4343233233 2322433355
37 3 2344443434 4443433333 4333444533
38 3 4455544445 5543554343 4343544514
39 3 4454555445 5455555454 5445552334
40 3 5555554545 4555455544 5544554353
3 3 4555555445 4555455555 5554543345
41 4 1131211114 2111111111 1111215523
42 4 1232423225 3443233232 3221234454
43 4 2123542344 3443243222 4222345323
44 4 3352511444 3443324422 4332445445
45 4 4342543445 3442345243 5432542544
46 4 5233544555 4455544334 4342545522
47 4 4445552455 5554545544 4344554445
48 4 5554554555 4543555554 5544554514
49 4 5544554555 4555555544 5555551443
4 4 5555555555 5555555445 5545553342
50 5 1232123214 2231232221 2211223145
51 5 3252433244 4453342333 3233333414
52 5 4344343444 3343333333 3323433335
53 5 4444444445 4453454443 4434455553
54 5 5555455555 5554554435 5445541154
55 5 5555553555 5554555555 5555554545
5 5 4555553555 5555555555 5555555245
56 6 1111211112 1111111111 1111215352
57 6 1232214213 1221212112 2122325134
58 6 3234323314 3322322221 3222324125
59 6 3323445435 2343222233 3332435435
60 6 5453445535 4553554434 4444544444
61 6 4535555545 4554354444 5445532433
62 6 5544554555 4554555455 5555552345
6 6 3545445445 4555355435 5545553341
63 7 1111111112 1111111111 1111115541
64 7 2241322312 2343222111 2221225451
65 7 2232413424 3433332223 2231332324
66 7 3334353435 3334334224 3322342553
67 7 4433533335 4453533334 4343544532
68 7 4444423545 3444434324 4343545545
69 7 4545354555 3544545344 3534454555
70 7 3534554445 4555555345 5544552252
71 7 5555513535 4454545435 4445555543
72 7 5555554445 4543455445 5545555425
7 7 5555554555 3555555455 4454554345
73 8 2122111313 1121112222 1211315343
74 8 1222325334 3343322223 2222232313
75 8 3244332434 4444322424 3233535355
76 8 3353343414 3453343333 2334434224
77 8 3553555525 5453445435 4344555455
78 8 5543554545 5453545555 5454545552
8 8 5545545535 5555555445 5545553343
"""


def nflx_votes(n_subjects: int = 30) -> np.ndarray:
    """(79, n_subjects) matrix of the votes, stimuli in file order."""
    rows = [line.split() for line in NFLX_LAST4OUTLIERS.strip().splitlines()]
    return np.array([[int(c) for c in "".join(row[2:])] for row in rows], dtype=float)[:, :n_subjects]


def nflx_frame(n_subjects: int = 30) -> pd.DataFrame:
    """The votes as a long ratings frame: participant = subject index, clip = asset_id, content, one scale."""
    rows = [line.split() for line in NFLX_LAST4OUTLIERS.strip().splitlines()]
    votes = nflx_votes(n_subjects)
    return pd.DataFrame([(s, int(row[0]), int(row[1]), "overall", votes[i, s]) for i, row in enumerate(rows)
                         for s in range(n_subjects)], columns=["participant", "clip", "content", "scale", "rating"])


NAMES = ["Hidden reference (ground truth)", "Wav2Lip GAN checkpoint", "LipGAN baseline", "frozen_mouth control"]
KINDS = ["reference", "model", "model", "control"]
QUALITY = [1.3, 0.5, -0.4, -1.2]
SCALES = ("sync", "visual", "overall")


def synthetic_ratings(n_participants: int = 14, n_contents: int = 6, per_participant: int = 16, seed: int = 0,
                      conditions=NAMES, kinds=KINDS, quality=QUALITY, straight_liners: int = 0) -> pd.DataFrame:
    """A small ACR study: every condition on every content (clip = condition × content), each participant rating a
    random subset of the clips on every scale; ratings = 3 + condition quality + content + clip + bias + noise.
    The last ``straight_liners`` participants answer 3 to everything."""
    rng = np.random.default_rng(seed)
    n_conditions = len(conditions)
    n_clips = n_conditions * n_contents
    clip_condition = np.repeat(np.arange(n_conditions), n_contents)
    clip_content = np.tile(np.arange(n_contents), n_conditions)
    clip_effect = rng.normal(0.0, 0.25, n_clips) + rng.normal(0.0, 0.2, n_contents)[clip_content]
    rows = []
    for p in range(n_participants):
        bias = rng.normal(0.0, 0.3)
        for clip in rng.choice(n_clips, size=min(per_participant, n_clips), replace=False):
            k = clip_condition[clip]
            for s, scale in enumerate(SCALES):
                latent = 3.0 + quality[k] * (1.0 - 0.2 * s) + clip_effect[clip] + bias + rng.normal(0.0, 0.6)
                value = 3 if p >= n_participants - straight_liners else int(np.clip(np.rint(latent), 1, 5))
                rows.append({"participant": 100 + p, "clip": 1000 + int(clip), "condition": conditions[k],
                             "condition_kind": kinds[k], "content": f"content-{clip_content[clip]}", "scale": scale,
                             "rating": value})
    return pd.DataFrame(rows)


def synthetic_metrics(ratings: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """Per clip: 'tracker' follows the clip's mean rating, 'fid' falls with it (lower is better), 'noise' is
    unrelated, and 'psnr' is infinite on the hidden reference (a clip compared with itself)."""
    rng = np.random.default_rng(seed)
    clips = ratings.groupby("clip").agg(mean=("rating", "mean"), kind=("condition_kind", "first")).reset_index()
    return pd.DataFrame({
        "clip": clips["clip"], "tracker": clips["mean"] + rng.normal(0.0, 0.15, len(clips)),
        "fid": 40.0 - 6.0 * clips["mean"] + rng.normal(0.0, 1.0, len(clips)),
        "noise": rng.normal(0.0, 1.0, len(clips)),
        "psnr": np.where(clips["kind"] == "reference", np.inf, 25.0 + rng.normal(0.0, 1.0, len(clips))),
    })
