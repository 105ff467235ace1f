"""A model built on a cellfuse module trains under DistributedDataParallel: two processes (gloo,
CPU) on half a batch each average to the gradients of one process on the whole batch."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import cellfuse
from cells import ElmanProj, rel

I, H, O, T, B = 6, 10, 4, 8, 6


def make_model():
    torch.manual_seed(1234)  # the same initial parameters in every process
    return cellfuse.compile(ElmanProj(I, H, O), (torch.randn(2, I), torch.randn(2, H)))


def data():
    g = torch.Generator().manual_seed(99)
    return torch.randn(T, B, I, generator=g), torch.randn(T, B, O, generator=g)


def loss_of(rnn, X, Y):
    out, h = rnn(X)
    return ((out - Y) ** 2).mean() + 0.1 * (h ** 2).mean()


def worker(rank, world, init_file, result_file):
    os.environ["CELLFUSE_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rnn = make_model()
        model = nn.parallel.DistributedDataParallel(rnn)
        X, Y = data()
        half = B // world
        loss = loss_of(model, X[:, rank * half:(rank + 1) * half], Y[:, rank * half:(rank + 1) * half])
        loss.backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in rnn.named_parameters()}, result_file)
        # Both ranks done before either tears gloo down: a rank that destroyed the group while
        # the other was still at work died now and then in gloo's threads ("terminate called
        # without an active exception", SIGABRT; 1 run in ~20 on the 2-core CI machine).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_whole_batch():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        result_file = os.path.join(tmp, "grads.pt")
        mp.spawn(worker, args=(2, init_file, result_file), nprocs=2, join=True)
        ddp_grads = torch.load(result_file)
    rnn = make_model()
    X, Y = data()
    loss_of(rnn, X, Y).backward()
    assert set(ddp_grads) == {n for n, _ in rnn.named_parameters()}
    for name, p in rnn.named_parameters():
        assert rel(ddp_grads[name], p.grad) <= 1e-5, name
