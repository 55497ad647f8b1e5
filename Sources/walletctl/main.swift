print("walletctl: not yet")
