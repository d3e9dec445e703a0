"""Scratch: which training change lets a toy UNet place a shape where its caption says?
Pool: one small solid circle (colour varies) on white, at every position. Knobs: pred eps|v, enc joint|frozen,
coord 0|1, tw uniform|snr (eps loss weighted toward high t). Then renders (DPM++ 15 steps, cfg 5) read back."""
import argparse, random, time
import numpy as np, torch
from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
from toyworld import build, world
from bridge.syntax.tokens import EOS, build_clip_tokenizer
ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=800); ap.add_argument("--pred", default="eps")
ap.add_argument("--enc", default="joint"); ap.add_argument("--coord", type=int, default=0)
ap.add_argument("--tw", default="uniform"); ap.add_argument("--full", type=int, default=0); ap.add_argument("--save", default=""); ap.add_argument("--kin", type=int, default=3); ap.add_argument("--cap", type=float, default=20.0)
a = ap.parse_args(); print(vars(a), flush=True)
torch.set_num_threads(2)

class CoordUNet(UNet2DConditionModel):
    def forward(self, sample, timestep, encoder_hidden_states, **kw):
        n, _, h, w = sample.shape
        ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return super().forward(torch.cat([sample, xs.to(sample), ys.to(sample)], 1), timestep, encoder_hidden_states, **kw)

rng = random.Random(0)
caps, pix = [], []
N = 3000
if a.full:
    caps, _, pix = build.draw_pool(world.SOURCE, 10000, 0)
else:
    for i in range(N):
        p = rng.choice(world.POSITIONS)
        sp = world.Spec(shape="circle", colour=rng.choice(["red", "blue", "green"]), size="small",
                        position=None if p == "center" else p, fill="solid", background="white")
        caps.append(world.write(sp, world.SOURCE))
        pix.append(np.asarray(world.draw(world.realize(sp, world.SOURCE, rng), i), np.float32).transpose(2, 0, 1) / 127.5 - 1)
    pix = torch.from_numpy(np.stack(pix))
print(caps[:3], flush=True)
vae = AutoencoderKL.from_pretrained(build.WEIGHTS_DIR / "vae").eval(); vae.requires_grad_(False)
tok = build_clip_tokenizer(pad_token=EOS)
ids = build.token_ids(tok, caps); empty = build.token_ids(tok, [""])[0]
with torch.no_grad():
    d = [vae.encode(pix[i:i + 256]).latent_dist for i in range(0, len(pix), 256)]
    mean = torch.cat([x.mean for x in d]); std = torch.cat([x.std for x in d])
scale = vae.config.scaling_factor
torch.manual_seed(0); te = build.make_text_encoder(tok, 64, False).train()
if a.enc == "frozen": te.requires_grad_(False)
torch.manual_seed(0)
if a.coord:
    unet = CoordUNet(sample_size=16, in_channels=6, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                     cross_attention_dim=64, norm_num_groups=8, attention_head_dim=8)
else:
    unet = build.make_unet(64, False)
    if a.kin != 3:
        from diffusers import UNet2DConditionModel as U
        torch.manual_seed(0); unet = U(**{**dict(unet.config), 'conv_in_kernel': a.kin})
unet.train()
pt = "v_prediction" if a.pred == "v" else "epsilon"
sc = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, prediction_type=pt)
ns = DDPMScheduler(**sc)
ab = ns.alphas_cumprod
params = [p for p in list(unet.parameters()) + list(te.parameters()) if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1.5e-3, weight_decay=0.01); ls = build._schedule(opt, a.steps, warmup=100)
g = torch.Generator().manual_seed(0); t0 = time.time()
for step in range(a.steps):
    idx = torch.randint(len(caps), (32,), generator=g)
    x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
    bi = ids[idx].clone(); bi[torch.rand(32, generator=g) < 0.1] = empty
    noise = torch.randn(x0.shape, generator=g); t = torch.randint(0, 1000, (32,), generator=g)
    noisy = ns.add_noise(x0, noise, t)
    target = ns.get_velocity(x0, noise, t) if a.pred == "v" else noise
    pred = unet(noisy, t, encoder_hidden_states=te(bi)[0]).sample
    per = ((pred - target) ** 2).mean((1, 2, 3))
    if a.tw == "snr":  # eps loss weighted as the v loss weighs x0 error: (snr+1)/snr, capped
        snr = ab[t] / (1 - ab[t]); w = ((snr + 1) / snr).clamp(max=a.cap); per = per * w / w.mean()
    loss = per.mean()
    build._optimise(loss, opt, ls, clip_params=params)
    if step % 200 == 0 or step == a.steps - 1:
        print(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / (step + 1):.2f}s/step", flush=True)
unet.eval(); te.eval()
if a.coord: unet.register_to_config(in_channels=4)
if a.coord: unet.register_to_config(in_channels=4)
sched = DPMSolverMultistepScheduler(**{k: v for k, v in sc.items()}, algorithm_type="dpmsolver++", solver_order=2)
pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                               feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
hits = {p: 0 for p in world.POSITIONS}; n = 0
if a.full:
    tests = []
    for p in world.POSITIONS:
        for c in ["red", "blue", "green", "yellow"]:
            tests.append((p, world.write(world.Spec(shape="square", colour=c, size="small", position=None if p == "center" else p, fill="solid", background="white"), world.SOURCE)))
else:
    tests = [(p, world.write(world.Spec(shape="circle", colour=c, size="small", position=None if p == "center" else p, fill="solid", background="white"), world.SOURCE)) for p in world.POSITIONS for c in ["red", "blue", "green", "red"]]
with torch.no_grad():
    for seed in range(3):
        prompts = [t[1] for t in tests]
        ims = pipe(prompts, num_inference_steps=15, guidance_scale=5.0, generator=torch.Generator().manual_seed(seed), height=32, width=32).images
        for (p, _), im in zip(tests, ims):
            got = world.read_image(im)["position"]; hits[p] += got == p; n += 1
print("read back per position (of %d each):" % (n // 5), hits, "total %.1f%%" % (100 * sum(hits.values()) / n), flush=True)
print("example", tests[1][1], flush=True)
# x0 predicted from pure noise at t=999 (CFG 5), decoded: where is the ink, per position word (ideal: left x<16, right x>16)
with torch.no_grad():
    for p in world.POSITIONS:
        cap = world.write(world.Spec(shape="circle", colour="red", size="small", position=None if p == "center" else p, fill="solid", background="white"), world.SOURCE)
        e = te(build.token_ids(tok, [cap] * 16))[0]; u = te(build.token_ids(tok, [""] * 16))[0]
        x = torch.randn(16, 4, 16, 16, generator=torch.Generator().manual_seed(1)); t = torch.full((16,), 999)
        o = unet(x, t, e).sample; o = u_ = unet(x, t, u).sample + 5 * (o - unet(x, t, u).sample)
        a_ = ab[999]
        x0 = o if False else None
        if pt == "epsilon": x0 = (x - (1 - a_).sqrt() * o) / a_.sqrt()
        else: x0 = a_.sqrt() * x - (1 - a_).sqrt() * o
        img = vae.decode(x0 / scale).sample.clamp(-1, 1)
        ink = (1 - img).mean(1).clamp(min=0)  # white is 1
        ys, xs = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing="ij")
        m = ink.mean(0)
        print(f"x0@999 {p:7s} centroid x {(m * xs).sum() / m.sum():.1f} y {(m * ys).sum() / m.sum():.1f}", flush=True)
if a.save: pipe.save_pretrained(a.save)
