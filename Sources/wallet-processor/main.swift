print("wallet-processor: not yet")
