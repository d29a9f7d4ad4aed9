"""Training: `samunet_train DATASET STRATEGY [FOLD]`, one trainer loop that every strategy plugs into."""
