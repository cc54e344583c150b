"""What every figure of the llmos-eval report means (metrics.json 'definitions')."""
from llmos_ros.evaluation.belief_metrics import DEFINITIONS as BELIEF_DEFINITIONS

ELBO_DEFINITION = (
    'Negative evidence lower bound per sample in nats, on the normalised inputs of the subset: '
    '-E_q[log p(x_S|z)] + KL(q || N(0, I)), averaged over the samples in which every modality '
    'of S is present. q is the fused posterior of S as the diagonal Gaussian the model '
    'publishes (MultimodalVAE.encode: the exact product for poe, the moment-matched mixture '
    'otherwise, over the full latent); p(x_S|z) = prod_{m in S} N(x_m | decoder mean, '
    'exp(log_scale)^2) without the training likelihood_scale weights; KL is exact; the '
    'expectation uses L seeded samples of z (meta.elbo_samples).')
IWAE_DEFINITION = (
    'Importance-weighted negative log-likelihood per sample in nats: -log (1/K sum_k '
    'p(x_S|z_k) N(z_k; 0, I) / q(z_k)), z_k ~ q, with q and p(x_S|z) as for neg_elbo, averaged '
    'over the samples (an upper bound on -log p(x_S) that tightens as K grows).')
EXTRA_DEFINITIONS = {
    'neg_elbo': ELBO_DEFINITION,
    'iwae_nll': IWAE_DEFINITION,
    'probe_accuracy': "Linear probe on the latent mean (full latent) of the subset's fused "
                      "posterior: each dimension standardised with the training latents' mean "
                      'and std, multinomial logistic regression (L2, C=1, lbfgs) fit on the '
                      "training bag's labelled samples in which every modality of the subset is "
                      'present (at most meta.max_fit_samples of them, evenly spaced in time; '
                      'the count used is meta.fit_samples), encoded from the same subset; the '
                      'fraction of labelled test samples (every '
                      'modality of the subset present) whose label it predicts. The label of a '
                      'sample is the most recent /episode/label stamped <= the sample stamp.',
    'coherence': 'Cross-modal coherence: for each modality, a label classifier '
                 "(CoherenceClassifier) trained on the training bag's real normalised inputs "
                 'of that modality (at most meta.max_fit_samples labelled samples, evenly '
                 'spaced in time; the count used is meta.fit_samples; fitted anew or taken '
                 'from the disk cache of classifiers fitted on the same inputs, labels and '
                 'settings, the same classifier bit for bit: meta.coherence_classifiers) '
                 'classifies the modality decoded from the latent mean of the '
                 'given subset; the fraction of labelled test samples (every modality of the '
                 'subset present) classified as their true label.',
    'latency_ms': 'Per-sample latency of the live path in milliseconds: PerceptionEngine.infer '
                  '(preprocessing of the paired window + fusion by the model), as the node '
                  'runs it for every sample; p50, p90, p99 (linear interpolation), max and mean.',
    'wall_s': 'Wall-clock seconds of the replay: reading and decoding the bag, pairing, '
              'preprocessing and the live model call per sample (recording excluded).',
    'phase_seconds': 'meta.phase_seconds: wall-clock seconds of each stage of llmos-eval '
                     '(read_train_bag, replay_test_bag, coherence_classifiers, subset_metrics, '
                     'probes, live_check, examples, belief_surprise: the belief tracker over '
                     'the training rows and the belief figures; the stdout summary adds '
                     'report: writing '
                     'the files and plots). Imports and start-up are outside every stage.',
    'data_span_s': 'Last - first header stamp of the model-topic messages read, seconds.',
    'drops': 'Messages read but not used, by reason: unused_topic (no model modality, not a '
             'label); <modality>/<reason> for a synchroniser rejection (stamp_backwards, '
             'stamp_repeated, stamp_jump, off_timeline), a preprocessing failure of every '
             'window holding the message '
             '(InputError reason, e.g. size, encoding, nan), an unreadable message type (type), '
             'a message in no sample window (unpaired: a newer frame was chosen or it was too '
             'old), or one read after --max-samples samples (after_max_samples).',
    'counts': 'messages: messages read; processed: sensor messages in the window of at least one '
              'evaluated sample where their modality was usable, plus /episode/label messages; '
              'dropped: the rest (messages == processed + dropped); samples: sample sets formed '
              'by the pairing; samples_evaluated: those with at least one usable modality; '
              'samples_no_modality: those without; labels: label messages.',
}
DEFINITIONS = {**EXTRA_DEFINITIONS, **BELIEF_DEFINITIONS}
