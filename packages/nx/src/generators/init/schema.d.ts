export interface InitGeneratorSchema {
  storeDir?: string;
  signingSecretEnv?: string;
  readOnly?: boolean;
  /** A remote tier URL (s3://, gs://, https://); added to `tiers`. */
  remote?: string;
  skipFormat?: boolean;
}
