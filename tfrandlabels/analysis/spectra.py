"""Class-wise spectra and frequency shortcuts (Wang et al., ICCV 2023).

Wang et al. ask which frequencies a classifier relies on, class by class:

* `class_mean_spectra`: E_c, the mean amplitude spectrum |F(u, v)| of the images of each
  class, streamed over a data set batch by batch (`class_spectrum_sums`,
  `merge_spectrum_sums`).
* `adcs`: the average difference of class-wise spectra, where class c's amplitude is
  larger than the other classes'. It describes the data, not a model.
* `frequency_importance` and `dominant_frequency_map`: how much a model's loss on the
  images of one class grows when one frequency is removed from them, and the top
  fraction of those frequencies, the dominant frequency map (DFM) of the class;
  `class_frequency_importance` scores every class in one search.
* `shortcut_rates` and `is_shortcut`: whether the DFM alone makes the model predict the
  class (true positives) without pulling other classes to it (false positives).

Layout: every [H, W] map is centred (fftshift), as in `tfrandlabels.data.frequency`:
entry [H // 2, W // 2] is the zero frequency and entry [y, x] is the frequency
(y - H // 2, x - W // 2) in cycles per image. A frequency is named by its (row, column)
position in that layout. Removing a frequency from a real image also removes its
conjugate partner (-u, -v) (modulo the size), otherwise the image would turn complex;
`removal_masks` takes care of the rows and columns where the partner is the frequency
itself (the zero frequency, and the Nyquist row and column of an even size).
"""
import numpy as np
import tensorflow as tf

from tfrandlabels.data import frequency


def _image_batch(images, name="images"):
  """Returns `images` as a float tensor [B, H, W, C], or raises naming the argument."""
  images = tf.convert_to_tensor(images)
  if images.shape.rank != 4:
    raise ValueError(f"{name} must be a batch [B, H, W, C], got shape {images.shape}")
  if images.dtype != tf.float64:
    images = tf.cast(images, tf.float32)
  return images


def _channels_first(images):
  return tf.transpose(images, [0, 3, 1, 2])


def amplitude_spectra(images):
  """Centred amplitude spectra |F(u, v)| (not logarithmic) of each image and channel.

  Args:
    images: images [B, H, W, C]; integers are cast to float32, float64 is kept.

  Returns:
    A float tensor [B, H, W, C] (float64 for float64 images, else float32) in the
    centred layout.
  """
  images = _image_batch(images)
  complex_dtype = tf.complex128 if images.dtype == tf.float64 else tf.complex64
  spectra = tf.signal.fft2d(tf.cast(_channels_first(images), complex_dtype))
  amplitudes = tf.signal.fftshift(tf.abs(spectra), axes=[-2, -1])
  return tf.transpose(amplitudes, [0, 2, 3, 1])


def class_spectrum_sums(images, labels, num_classes):
  """Per-class sums of amplitude spectra of one batch, in float64.

  Args:
    images: images [B, H, W, C].
    labels: integer labels [B] in [0, num_classes).
    num_classes: number of classes.

  Returns:
    (sums, counts): float64 [num_classes, H, W, C] sums of the amplitude spectra of
    each class's images, and int64 [num_classes] numbers of images per class.
  """
  spectra = amplitude_spectra(tf.cast(_image_batch(images), tf.float64))
  labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
  tf.debugging.assert_equal(tf.size(labels), tf.shape(spectra)[0],
                            message="labels must hold one label per image")
  tf.debugging.assert_non_negative(labels, message="labels must be >= 0")
  tf.debugging.assert_less(labels, tf.cast(num_classes, tf.int64),
                           message=f"labels must be < num_classes={num_classes}")
  sums = tf.math.unsorted_segment_sum(spectra, labels, num_classes)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(labels), labels, num_classes)
  return sums, counts


def merge_spectrum_sums(first, second):
  """Adds two (sums, counts) pairs of `class_spectrum_sums`."""
  return first[0] + second[0], first[1] + second[1]


def class_mean_spectra(batches, num_classes):
  """E_c: the mean amplitude spectrum of each class, streamed batch by batch.

  Args:
    batches: a tf.data.Dataset of batched {"image": [B, H, W, C], "label": [B]} dicts,
      or any iterable of such dicts (numpy arrays or tensors). Images are used in the
      units they come in (uint8 images in 0..255); ADCS does not depend on the scale.
    num_classes: number of classes.

  Returns:
    float64 numpy array [num_classes, H, W, C], centred layout.

  Raises:
    ValueError: no batches, or a class without images (its mean is undefined).
  """
  total = None
  for batch in batches:
    sums = class_spectrum_sums(batch["image"], batch["label"], num_classes)
    total = sums if total is None else merge_spectrum_sums(total, sums)
  if total is None:
    raise ValueError("batches holds no batch; pass a data set with images")
  sums, counts = np.asarray(total[0]), np.asarray(total[1])
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(f"classes {empty.tolist()} have no images, so their mean spectrum "
                     "is undefined; pass data holding every class or a smaller num_classes")
  return sums / counts[:, None, None, None]


def adcs(class_means):
  """Average difference of class-wise spectra, the paper's formula, per channel.

  ADCS_c(u, v) = sum over c' != c of sign(E_c(u, v) - E_c'(u, v)): C - 1 where class c
  has the largest mean amplitude of all classes, 1 - C where it has the smallest.

  The reference code (nis-research/nn-frequency-shortcuts, Evaluation/compute_ADCS.py)
  departs from the formula in three ways: it sums the channel differences with
  grey-scale weights (0.2989 R + 0.587 G + 0.114 B) before taking the sign, so it gives
  one map per class, not one per channel; it includes the class itself in the sum and
  counts a zero difference as -1, which adds -1 everywhere (range [-C, C - 2]); and it
  compares per-class sums of spectra instead of means, so with unequal class sizes
  the larger class looks stronger at every frequency.

  Args:
    class_means: E, array [C, H, W, channels] (or [C, H, W]) of class-mean spectra.

  Returns:
    int64 numpy array of the same shape, values in [1 - C, C - 1].
  """
  means = np.asarray(class_means, np.float64)
  if means.ndim < 2 or means.shape[0] < 2:
    raise ValueError(f"class_means must be [C, H, W, ...] with C >= 2 classes, got shape "
                     f"{means.shape}")
  # One class at a time keeps memory at one [C, H, W, channels] array. The c' = c term
  # is sign(0) = 0, so summing over every c' is the sum over c' != c.
  return np.stack([np.sign(means[c] - means).sum(axis=0) for c in range(means.shape[0])]
                  ).astype(np.int64)


def conjugate_positions(height, width, rows, cols):
  """Centred positions of the conjugate partners -k of the frequencies at (rows, cols).

  The frequency at centred row y is y - H // 2; its negative, modulo H, sits at row
  (2 * (H // 2) - y) mod H. For an even H, row 0 (the Nyquist frequency -H/2) is its
  own partner, as is the zero frequency's row H // 2; likewise for columns.
  """
  partner_rows = (2 * (height // 2) - np.asarray(rows)) % height
  partner_cols = (2 * (width // 2) - np.asarray(cols)) % width
  return partner_rows, partner_cols


def _positions(height, width, frequencies):
  """Validates frequencies as an int array [K, 2] of centred (row, column) positions."""
  positions = np.asarray(frequencies)
  if positions.ndim != 2 or positions.shape[1] != 2 or not np.issubdtype(positions.dtype,
                                                                          np.integer):
    raise ValueError("frequencies must be integer (row, column) positions [K, 2] in the "
                     f"centred layout, got an array of shape {positions.shape} and dtype "
                     f"{positions.dtype}")
  if positions.size and (positions.min() < 0 or positions[:, 0].max() >= height
                         or positions[:, 1].max() >= width):
    raise ValueError(f"frequencies must lie in [0, {height}) x [0, {width}), the centred "
                     f"positions of an image of height {height} and width {width}")
  return positions


def removal_masks(height, width, frequencies):
  """Masks that each remove one frequency and its conjugate partner.

  Args:
    height: image height H.
    width: image width W.
    frequencies: integer (row, column) positions [K, 2] in the centred layout.

  Returns:
    float32 numpy array [K, H, W], centred layout: ones except zeros at mask k's
    frequency and at its conjugate partner (the same entry when it is its own partner).
  """
  positions = _positions(height, width, frequencies)
  rows, cols = positions[:, 0], positions[:, 1]
  partner_rows, partner_cols = conjugate_positions(height, width, rows, cols)
  masks = np.ones((len(positions), height, width), np.float32)
  index = np.arange(len(positions))
  masks[index, rows, cols] = 0
  masks[index, partner_rows, partner_cols] = 0
  return masks


def _half_spectra(images):
  """The one FFT: real 2-D FFT of each image and channel, [B, C, H, W // 2 + 1]."""
  return tf.signal.rfft2d(_channels_first(images))


def _filter_half_spectra(half_spectra, masks, height, width):
  """Images [K, B, H, W, C] rebuilt from half spectra [B, C, H, W // 2 + 1] x K masks."""
  # The real FFT keeps the non-negative column frequencies: columns 0..W // 2 of the
  # unshifted mask; the other half is implied by conjugate symmetry.
  half_masks = tf.signal.ifftshift(tf.convert_to_tensor(masks), axes=[-2, -1])[
      :, :, :width // 2 + 1]
  products = half_spectra[None] * tf.cast(half_masks[:, None, None], half_spectra.dtype)
  filtered = tf.signal.irfft2d(products, fft_length=[height, width])
  return tf.transpose(filtered, [0, 1, 3, 4, 2])


def _check_symmetric(masks):
  """Raises unless every mask [K, H, W] treats each frequency like its partner."""
  unshifted = np.fft.ifftshift(masks, axes=(-2, -1))
  negated = np.roll(unshifted[:, ::-1, ::-1], 1, axis=(1, 2))
  if not np.array_equal(unshifted, negated):
    raise ValueError("masks must keep or remove each frequency together with its "
                     "conjugate partner: build removal masks with removal_masks, and "
                     "extend a mask of kept frequencies (e.g. a DFM) with "
                     "tfrandlabels.data.frequency.symmetrize")


def remove_frequencies(images, masks):
  """Filters a batch of images with K conjugate-symmetric masks, from one FFT.

  Args:
    images: float images [B, H, W, C] (float64 is kept, anything else is float32).
    masks: centred masks [K, H, W] (or one [H, W]), e.g. from `removal_masks`, or DFMs
      to keep only their frequencies; each must treat a frequency and its conjugate
      partner alike, so the results are real.

  Returns:
    Real images [K, B, H, W, C]: entry k is every image filtered by mask k, each
    channel independently.
  """
  images = _image_batch(images)
  height, width = images.shape[1], images.shape[2]
  masks = np.asarray(masks, images.dtype.as_numpy_dtype)
  masks = masks[None] if masks.ndim == 2 else masks
  if masks.ndim != 3 or masks.shape[1:] != (height, width):
    raise ValueError(f"masks must be [K, {height}, {width}] to match the images, got shape "
                     f"{masks.shape}")
  _check_symmetric(masks)
  return _filter_half_spectra(_half_spectra(images), masks, height, width)


def _sinusoids(height, width, positions):
  """What removing each conjugate pair takes from an image, per unit coefficient.

  Removing frequency k = (u, v) and its partner -k from x subtracts
  (w / HW) * Re(X[k] exp(2 pi i (u m / H + v n / W))) at pixel (m, n), with w = 2 for a
  pair and w = 1 for a frequency that is its own partner. Writing X[k] = A + iB, that
  is A * cos - B * sin of the returned patterns.

  Args:
    height: image height H.
    width: image width W.
    positions: centred (row, column) positions [K, 2].

  Returns:
    (rows, cols, cos, sin): the unshifted index of each pair's member in the half
    spectrum of a real FFT (column <= W // 2), and float32 patterns [K, H, W] that
    carry the factor w / HW.
  """
  rows = (positions[:, 0] - height // 2) % height
  cols = (positions[:, 1] - width // 2) % width
  flip = cols > width // 2
  rows, cols = np.where(flip, -rows % height, rows), np.where(flip, -cols % width, cols)
  own_partner = (rows == -rows % height) & (cols == -cols % width)
  weight = np.where(own_partner, 1.0, 2.0) / (height * width)
  phase = 2 * np.pi * (rows[:, None, None] * np.arange(height)[:, None] / height
                       + cols[:, None, None] * np.arange(width) / width)
  return (rows, cols, (weight[:, None, None] * np.cos(phase)).astype(np.float32),
          (weight[:, None, None] * np.sin(phase)).astype(np.float32))


def _responses(linear, patterns, channels):
  """The linear map `linear` on each pattern [K, H, W] placed in each channel alone:
  [K, C, P], P the size of one output; one call of `linear` for all of them."""
  count, height, width = patterns.shape
  placed = (patterns[:, None, :, :, None] * np.eye(channels, dtype=np.float32)[
      None, :, None, None, :]).reshape(count * channels, height, width, channels)
  return tf.reshape(linear(placed), [count, channels, -1])


@tf.function(jit_compile=True)
def _subtract_responses(stem_outputs, real, imag, cos_responses, sin_responses):
  """stem_outputs [B, P] - sum_c (real * cos - imag * sin responses): [K, B, P], from
  coefficients [K, B, C] and responses [K, C, P]. Compiled, the sum over the few
  channels fuses into one pass over the output (an einsum or batched matmul of a
  contraction over C = 3 is several times slower on a CPU)."""
  removed = stem_outputs[None]
  for channel in range(real.shape[2]):
    removed -= (real[:, :, channel, None] * cos_responses[:, None, channel]
                - imag[:, :, channel, None] * sin_responses[:, None, channel])
  return removed


def _stem_without_pairs(linear, stem_outputs, half_spectra, positions, width):
  """stem(x - s_k) for every image x and pair k, [K * B, ...stem output shape].

  Removing pair k subtracts a sinusoid s_k from every image (`_sinusoids`), whose
  coefficients come from the one FFT of the images (`half_spectra`, [B, C, H,
  W // 2 + 1]; `width` is W). For an affine stem, stem(x - s_k) = stem(x) - L(s_k),
  L = stem - stem(0) its linear part, and s_k is a combination of 2C patterns (cos
  and sin in each channel) with the image's coefficients as weights: L runs on those
  2C patterns once per pair, not on every filtered image, and no filtered image is
  ever built. With the identity stem this equals `remove_frequencies` with
  `removal_masks(positions)`, in O(HW) per image and pair where an inverse FFT costs
  O(HW log HW).

  Args:
    linear: the linear part L of the stem, `lambda x: stem(x) - stem(0)`.
    stem_outputs: the stem's outputs on the intact images, [B, ...].
    half_spectra: [B, C, H, W // 2 + 1], from `_half_spectra` of the images.
    positions: centred positions [K, 2], one per pair.
    width: the images' width W.
  """
  _, channels, height, _ = half_spectra.shape
  rows, cols, cos, sin = _sinusoids(height, width, positions)
  coefficients = tf.gather_nd(tf.transpose(half_spectra, [2, 3, 0, 1]),
                              np.stack([rows, cols], axis=1))  # [K, B, C]
  cos_responses, sin_responses = tf.split(
      _responses(linear, np.concatenate([cos, sin]), channels), 2)
  removed = _subtract_responses(
      tf.reshape(stem_outputs, [stem_outputs.shape[0], -1]), tf.math.real(coefficients),
      tf.math.imag(coefficients), cos_responses, sin_responses)
  return tf.reshape(removed, [-1, *stem_outputs.shape[1:]])


def _pair_representatives(height, width, positions):
  """One centred position per conjugate pair among `positions`, [P, 2], sorted."""
  partner_rows, partner_cols = conjugate_positions(height, width, positions[:, 0],
                                                   positions[:, 1])
  flat = np.minimum(positions[:, 0] * width + positions[:, 1],
                    partner_rows * width + partner_cols)
  unique = np.unique(flat)
  return np.stack([unique // width, unique % width], axis=1)


def _group_mean_losses(labels, logits, group_weights):
  """Mean cross-entropy per group of logits [K * B, classes], K stacked copies of the
  B images: [K, G], with group_weights [B, G] the 1 / size weights of each group."""
  losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.tile(labels, [logits.shape[0] // labels.shape[0]]),
      logits=tf.cast(logits, tf.float32))
  return tf.reshape(losses, [-1, labels.shape[0]]) @ group_weights


def _grouped_importance(predict_fn, images, labels, groups, num_groups, frequencies, chunk,
                        stem):
  """[num_groups, H, W] importance maps, each the mean over the images of one group.

  The search shared by `frequency_importance` (one group) and
  `class_frequency_importance` (a group per class); see those for the arguments.
  """
  images = tf.cast(_image_batch(images), tf.float32)
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  labels = tf.broadcast_to(tf.cast(labels, tf.int32), [batch])
  if int(chunk) != chunk or chunk < 1:
    raise ValueError(f"chunk={chunk!r} must be a positive int")
  if frequencies is None:
    frequencies = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"),
                           axis=-1).reshape(-1, 2)
  pairs = _pair_representatives(height, width, _positions(height, width, frequencies))
  members = np.eye(num_groups, dtype=np.float32)[groups]  # [B, G]
  sizes = members.sum(axis=0)
  group_weights = tf.constant(members / np.maximum(sizes, 1))
  stem = stem or tf.identity
  stem_outputs = stem(images)
  offset = stem(tf.zeros([1, *images.shape[1:]]))
  intact = _group_mean_losses(labels, predict_fn(stem_outputs), group_weights)
  half_spectra = _half_spectra(images)
  importance = np.full((num_groups, height, width), np.nan)
  for start in range(0, len(pairs), chunk):
    positions = pairs[start:start + chunk]
    removed = _stem_without_pairs(lambda x: stem(x) - offset, stem_outputs, half_spectra,
                                  positions, width)
    increase = (_group_mean_losses(labels, predict_fn(removed), group_weights)
                - intact).numpy().T  # [G, K]
    importance[:, positions[:, 0], positions[:, 1]] = increase
    partner_rows, partner_cols = conjugate_positions(height, width, positions[:, 0],
                                                     positions[:, 1])
    importance[:, partner_rows, partner_cols] = increase
  importance[sizes == 0] = np.nan
  return importance


def frequency_importance(predict_fn, images, labels, frequencies=None, chunk=16,
                         stem=None):
  """Increase of the mean cross-entropy when each frequency is removed from images.

  This is the ranking score of a dominant frequency map: give it the images of one
  class. Each frequency is removed together with its conjugate partner, and the pair
  gets one score, stored at both positions. Removals are batched: `chunk` pairs are
  removed from all B images at once, from one FFT of the images, so each call of
  `predict_fn` sees chunk * B inputs.

  Args:
    predict_fn: maps stem outputs [N, ...] (with the identity stem: float32 images
      [N, H, W, C]) to logits [N, num_classes] (not probabilities), e.g.
      `lambda x: model(x, training=False)`.
    images: the images [B, H, W, C] of one class, already preprocessed as the model
      expects them (the frequencies are removed from exactly these values).
    labels: their label, an int or an int array [B].
    frequencies: centred (row, column) positions [K, 2] to score; default every
      frequency.
    chunk: number of removed frequency pairs per call of `predict_fn`.
    stem: None (the identity), or an affine map of float32 images [N, H, W, C] such
      that predict_fn(stem(x)) are the model's logits, e.g. its first convolution
      without the activation. Removals then happen in the stem's output space
      (`_stem_without_pairs`): the stem runs on 2C patterns per pair instead of on
      every filtered image. A stem that is not affine gives wrong scores.

  Returns:
    float64 numpy array [H, W], centred layout: mean loss with the frequency removed
    minus the mean loss of the intact images; NaN where no frequency was scored.
  """
  return _grouped_importance(predict_fn, images, labels, np.zeros(len(images), np.int64), 1,
                             frequencies, chunk, stem)[0]


def class_frequency_importance(predict_fn, images, labels, num_classes, frequencies=None,
                               chunk=16, stem=None):
  """`frequency_importance` of every class at once: [num_classes, H, W].

  Map c equals `frequency_importance` of the images labelled c (NaN for a class
  without images), but one search serves all classes: a call of `predict_fn` sees
  chunk * B inputs, B the images of all classes, and a stem's pattern responses are
  computed once per pair, not once per pair and class.

  Args:
    predict_fn: as for `frequency_importance`.
    images: images [B, H, W, C] of any classes, preprocessed as the model expects.
    labels: int array [B], each in [0, num_classes).
    num_classes: C, the number of maps.
    frequencies, chunk, stem: as for `frequency_importance`.

  Returns:
    float64 numpy array [num_classes, H, W], centred layout.
  """
  labels = np.asarray(labels)
  if labels.shape != (len(images),) or labels.size and not (
      np.issubdtype(labels.dtype, np.integer) and 0 <= labels.min()
      and labels.max() < num_classes):
    raise ValueError(f"labels must be {len(images)} ints in [0, {num_classes}), one per "
                     f"image, got shape {labels.shape} and dtype {labels.dtype}")
  return _grouped_importance(predict_fn, images, labels, labels, num_classes, frequencies,
                             chunk, stem)


def dominant_frequency_map(importance, top_fraction=0.05):
  """The dominant frequency map: the frequencies whose removal hurts most.

  Keeps every frequency whose score is at least the k-th largest, with k =
  ceil(top_fraction * number of scored frequencies) (ties are kept), then adds the
  conjugate partner of every kept frequency, so the map can filter a real image.

  Args:
    importance: scores [H, W] (centred), e.g. from `frequency_importance`; NaN
      entries (not scored) are never kept.
    top_fraction: share of the scored frequencies to keep, in (0, 1].

  Returns:
    Boolean numpy array [H, W], centred layout, conjugate-symmetric.
  """
  scores = np.asarray(importance, np.float64)
  if scores.ndim != 2:
    raise ValueError(f"importance must be a map [H, W], got shape {scores.shape}")
  if not 0 < top_fraction <= 1:
    raise ValueError(f"top_fraction={top_fraction!r} must be in (0, 1], e.g. 0.05")
  scored = np.isfinite(scores)
  if not scored.any():
    raise ValueError("importance has no finite score; compute it with frequency_importance")
  ranked = np.sort(scores[scored])
  threshold = ranked[-int(np.ceil(top_fraction * ranked.size))]
  dominant = scored & (scores >= threshold)
  return frequency.symmetrize(dominant).numpy() > 0


def shortcut_rates(predictions, labels, num_classes):
  """Per-class true- and false-positive rates of a set of predictions.

  TPR_c is the share of the images of class c predicted as c; FPR_c is the share of
  the images of the other classes predicted as c. For the shortcut test of a class c,
  predict images filtered by class c's DFM and read entry c.

  Args:
    predictions: predicted classes [N], or logits/probabilities [N, num_classes].
    labels: true classes [N].
    num_classes: number of classes.

  Returns:
    (tpr, fpr): float64 numpy arrays [num_classes]; NaN for a class without images
    (TPR) or when every image is of that class (FPR).
  """
  predictions = np.asarray(predictions)
  if predictions.ndim == 2:
    predictions = predictions.argmax(axis=-1)
  predictions = predictions.reshape(-1).astype(np.int64)
  labels = np.asarray(labels).reshape(-1).astype(np.int64)
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions ({predictions.size}) and labels ({labels.size}) must "
                     "hold one entry per image")
  for name, values in (("predictions", predictions), ("labels", labels)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f"{name} must be classes in [0, {num_classes})")
  confusion = np.zeros((num_classes, num_classes), np.int64)  # [true, predicted]
  np.add.at(confusion, (labels, predictions), 1)
  true_positives = np.diag(confusion)
  positives = confusion.sum(axis=1)
  false_positives = confusion.sum(axis=0) - true_positives
  with np.errstate(invalid="ignore", divide="ignore"):
    tpr = true_positives / positives
    fpr = false_positives / (labels.size - positives)
  return tpr, fpr


def is_shortcut(tpr, fpr, min_tpr, max_fpr):
  """Flags the classes whose DFM is a frequency shortcut: tpr >= min_tpr and fpr <= max_fpr.

  With each class's rates measured on images filtered by that class's DFM, a high TPR
  says the few frequencies of the DFM are enough for the model to recognize the
  class, and a low FPR says they are specific to it: other classes' images reduced to
  the same frequencies are not pulled to it. Both bounds are inclusive; NaN rates are
  never flagged.

  Returns:
    Boolean numpy array, the shape of tpr and fpr.
  """
  tpr, fpr = np.asarray(tpr, np.float64), np.asarray(fpr, np.float64)
  return (tpr >= min_tpr) & (fpr <= max_fpr)


def class_band_fraction(dfm, band_mask):
  """Share of the frequencies of a DFM [H, W] that lie inside a band mask [H, W]."""
  dfm, band_mask = np.asarray(dfm, bool), np.asarray(band_mask, bool)
  if dfm.shape != band_mask.shape:
    raise ValueError(f"dfm {dfm.shape} and band_mask {band_mask.shape} must have the same "
                     "shape [H, W]")
  if not dfm.any():
    raise ValueError("dfm keeps no frequency; build it with dominant_frequency_map")
  return float((dfm & band_mask).sum() / dfm.sum())
