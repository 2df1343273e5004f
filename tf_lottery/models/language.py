"""Character-level language models (Yu et al. 2020's LSTM and Transformer, at a 2-core CPU's size).

Both read a window of character ids [batch, n] and give next-character logits
[batch, n, vocabulary] at every position. Their prunable weights are those of the
prunable-weights protocol (pruning/prunable.py): embeddings (token and position),
LSTM input and recurrent kernels, attention projections, MLP kernels and the output
layer (pruned at the output rate). Biases, LayerNorm and LSTM gates' biases are not
pruned, as the papers' dense layers keep theirs.
"""

from typing import Sequence

import tensorflow as tf
import tf_keras as keras

from tf_lottery.models import register
from tf_lottery.models.layers import masked_dense
from tf_lottery.pruning.constraint import MaskConstraint


def _tokens(input_shape, num_classes, width: int):
    inputs = keras.Input(shape=input_shape, dtype=tf.int32, name="tokens")
    embedded = keras.layers.Embedding(num_classes, width, embeddings_constraint=MaskConstraint(),
                                      name="embedding")(inputs)
    return inputs, embedded


@register("lstm_lm")
def lstm_lm(input_shape, num_classes, embedding_dim: int = 64, lstm_units: Sequence[int] = (256,)):
    """Embedding (--embedding_dim, default 64), LSTM layers (--lstm_units, default one of 256), output softmax."""
    inputs, x = _tokens(input_shape, num_classes, int(embedding_dim))
    for i, units in enumerate(tuple(lstm_units) or (256,)):
        x = keras.layers.LSTM(int(units), return_sequences=True, kernel_constraint=MaskConstraint(),
                              recurrent_constraint=MaskConstraint(), name=f"lstm{i + 1}")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="lstm_lm")


@register("transformer_lm")
def transformer_lm(input_shape, num_classes, embedding_dim: int = 128, num_blocks: int = 2, num_heads: int = 4,
                   mlp_dim: int = 0):
    """A small causal decoder (pre-LayerNorm, GPT-style): token and position embeddings of width
    --embedding_dim (128), --num_blocks (2) blocks of --num_heads (4) causal MultiHeadAttention and a
    GELU MLP of --mlp_dim (4 x width), a final LayerNorm and the output layer."""
    width = int(embedding_dim)
    heads = int(num_heads)
    if width % heads:
        raise ValueError(f"--embedding_dim {width} is not divisible by --num_heads {heads}")
    inputs, x = _tokens(input_shape, num_classes, width)
    # Learned position embeddings, a [sequence length, width] table looked up by each position's index:
    # plain tf_keras ops, so an exported model needs no tf_lottery layer.
    length = int(input_shape[0])
    positions = tf.zeros_like(inputs) + tf.range(length, dtype=tf.int32)
    x = keras.layers.Add(name="add_positions")([x, keras.layers.Embedding(
        length, width, embeddings_constraint=MaskConstraint(), name="position")(positions)])
    for b in range(int(num_blocks)):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{b + 1}_norm1")(x)
        h = keras.layers.MultiHeadAttention(heads, width // heads, kernel_constraint=MaskConstraint(),
                                            name=f"block{b + 1}_attention")(h, h, use_causal_mask=True)
        x = keras.layers.Add(name=f"block{b + 1}_residual1")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{b + 1}_norm2")(x)
        h = masked_dense(int(mlp_dim) or 4 * width, name=f"block{b + 1}_mlp1", activation="gelu")(h)
        h = masked_dense(width, name=f"block{b + 1}_mlp2")(h)
        x = keras.layers.Add(name=f"block{b + 1}_residual2")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    outputs = masked_dense(num_classes, name="output")(x)
    return keras.Model(inputs, outputs, name="transformer_lm")
