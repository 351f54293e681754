"""The ReDrafter draft model: architecture (`model`), training data (`data`), teacher-forced loss
and metrics (`loss`), training (`train`) and the TensorRT-LLM interchange format (`export`)."""
