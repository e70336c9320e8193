import Foundation
import Gateway

exit(GatewayMain.main(CommandLine.arguments))
