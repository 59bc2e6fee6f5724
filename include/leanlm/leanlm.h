// leanlm's public C++ API: load a GGUF model, feed tokens, sample.
//
//   leanlm::EngineOptions o;  o.model_path = "model.gguf";
//   leanlm::Engine engine(o);
//   auto seq = engine.new_sequence();
//   auto ids = engine.tokenizer().encode("Hello", /*add_bos=*/true, /*parse_special=*/false);
//   const float* logits = engine.feed(*seq, ids);
#pragma once

#include "engine/sampler.h"
#include "engine/engine.h"
#include "engine/scoring.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
