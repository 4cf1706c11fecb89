export interface InitGeneratorSchema {
  storeDir?: string;
  signingSecretEnv?: string;
  readOnly?: boolean;
  skipFormat?: boolean;
}
