"""probe_network: the probe each audit uses, pretrained here when the registry says so."""

import dagster as dg

from divcoef_assets import pipeline
from divcoef_assets.assets.common import CHAIN_VERSION, GROUP, TORCH_POOL
from divcoef_assets.partitions import probe_partitions
from divcoef_assets.core.markdown import rounded
from divcoef_assets.records import ProbeRecord
from divcoef_assets.resources import DivcoefResource


@dg.asset(
    partitions_def=probe_partitions, group_name=GROUP, kinds={"pytorch", "safetensors"}, code_version=CHAIN_VERSION, pool=TORCH_POOL,
    description="A probe with a `pretrain` spec is trained here (GPT-2 architecture and tokenizer, a step "
    "budget, safetensors) once per spec and reused; any other probe is recorded as the hub id or folder it "
    "loads. The data version is the weights' content fingerprint.",
)
def probe_network(context: dg.AssetExecutionContext, divcoef: DivcoefResource) -> dg.Output[ProbeRecord]:
    probe = context.partition_key

    def report(step: int, total: int, loss: float) -> None:
        if step % 25 == 0 or step == total:
            context.log.info(f"pretrain step {step}/{total}, loss {loss:.3f}")

    record = pipeline.probe_network(divcoef.registry(), probe, divcoef.layout(), progress=report)
    metadata = {"model": record.model, "built_here": record.built_here, "weights_fingerprint": record.weights_fingerprint}
    if record.built_here:
        metadata.update(final_loss=None if record.final_loss is None else rounded(record.final_loss),
                        corpus_fingerprint=record.corpus_fingerprint, seconds=None if record.seconds is None else rounded(record.seconds))
    return dg.Output(record, data_version=dg.DataVersion(record.weights_fingerprint), metadata=metadata)
