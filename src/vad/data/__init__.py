"""Data: everything between footage on disk and the batches a method trains and is tested on.

May import the core only (``vad.errors``, ``vad.precision``, ``vad.distributed``, ``vad.io``): never the flow
estimators (the flow-target cache takes any :class:`~vad.data.flows.FlowFunction`), the nets, the methods or the
entry points. Within the package each module's imports point one way, from the top of this list down:

    src/vad/data/
      datamodule.py    VideoDataModule (its path is stored in every checkpoint): dataset -> caches -> clips -> loaders
      options.py       checks of the dataset config's values
      loaders.py       EpochShuffle, ResumableLoader (resumable data order), VideoShards (whole videos per DDP rank)
      pseudo/          pseudo-anomalies: training plug-ins, the labelled validation set of held-out videos
      clips.py         ClipDataset, TestClipDataset: strided slices of the cached frames (+ flow targets)
      flows.py         FlowCache: each video's flow targets computed once (FlowFunction: what it needs of an estimator)
      cache.py         FrameCache: every video decoded once, resized, uint8 on disk, memory-mapped
      batches.py       uint8 clips -> batch tensors: stack_clips, collate_clips, frames_to_float
      layout.py        open_dataset: the FFP layout, generic folders, single videos; picks the reader
      raw.py           the official downloads of UCSD, Avenue, ShanghaiTech
      catalog.py       the datasets known by name (KNOWN_DATASETS) and the error for a missing one
      labels.py        frame-label and pixel-mask parsers; attach_labels
      index.py         DatasetIndex, Video, FrameSource, MaskSource; folder listing; iter_frames
      frames.py        the one decoder of image and video files
      synthetic.py     the generated fixed-camera scene (written in the FFP layout)

    index = open_dataset("ped2", "data/ped2")
    dm = VideoDataModule("ped2", "data/ped2", image_size=(256, 256), clip_len=5)
"""
