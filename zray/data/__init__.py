"""zray.data: Ray Data's API over Arrow blocks in zray's object store.

``import zray as ray`` then ``ray.data.range(1000).map_batches(f).take(5)``.
A Dataset is a lazy plan; consuming it runs the plan on a streaming executor
(``executor.py``) as zray tasks and actor pools.  See docs/data.md.
Needs pyarrow and pandas: ``pip install 'zray[data]'``.
"""

from zray.data.aggregate import AggregateFn, Count, Max, Mean, Min, Std, Sum
from zray.data.block import BlockMetadata
from zray.data.consume import Schema
from zray.data.context import DataContext
from zray.data.dataset import Dataset, MaterializedDataset
from zray.data.grouped import GroupedData
from zray.data.iterator import DataIterator
from zray.data.plan import ActorPoolStrategy
from zray.data.read_api import (from_arrow, from_items, from_numpy, from_pandas, range,
                                range_tensor, read_binary_files, read_csv, read_json,
                                read_numpy, read_parquet, read_text)

__all__ = ["ActorPoolStrategy", "AggregateFn", "BlockMetadata", "Count", "DataContext",
           "DataIterator", "Dataset", "GroupedData", "MaterializedDataset", "Max", "Mean",
           "Min", "Schema", "Std", "Sum", "from_arrow", "from_items", "from_numpy",
           "from_pandas", "range", "range_tensor", "read_binary_files", "read_csv",
           "read_json", "read_numpy", "read_parquet", "read_text"]
